"""The search tier: owns the Milvus collections and answers through the encoder. Never imports torch."""

from imagesearch.observability import ignore_setuptools_deprecation

ignore_setuptools_deprecation()  # before any module of this package imports milvus_lite
