"""The gRPC contract (generated in imagesearch.v1) and the torch-free pieces both services share."""
