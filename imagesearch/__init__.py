"""The gRPC contract (generated in imagesearch.v1) and the torch-free pieces both services share."""

import os

# gRPC reads GRPC_VERBOSITY once, when grpc is imported; unset, its core logs at absl's default level (INFO),
# so every failed TLS handshake was a raw line on the terminal, and in the services' JSON logs. ERROR is
# gRPC's own documented default. The services' and the CLI's entry points import this package before grpc; a
# program that imports grpc first keeps gRPC's default, whatever imports the SDK later.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
