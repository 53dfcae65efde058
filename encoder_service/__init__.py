"""The GPU tier: CLIP over gRPC with dynamic batching. Only this package imports torch and clip."""

from imagesearch.observability import ignore_setuptools_deprecation

ignore_setuptools_deprecation()  # before any module of this package imports clip
