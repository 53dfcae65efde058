"""Where each part listens unless told otherwise, the model it serves, its limits and a picture's id: the
one place these are written."""

import json
import re
from collections.abc import Mapping
from typing import Any

DEFAULT_MODEL = "ViT-B/32"  # what the encoder serves unless told otherwise (OpenAI's, downloaded once)

ENCODER_PORT = 50051
SEARCH_PORT = 50052
WEB_PORT = 8080
ENCODER_METRICS_PORT = 9151
SEARCH_METRICS_PORT = 9152

ENCODER_ADDRESS = f"localhost:{ENCODER_PORT}"
SEARCH_ADDRESS = f"localhost:{SEARCH_PORT}"

# The largest request a search service accepts by default: one picture and its metadata.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_METADATA_BYTES = 64 * 1024  # a picture's metadata, as `metadata_bytes` measures it
MAX_IMAGE_PIXELS = 64_000_000  # the largest width x height decoded (decompression bombs)
GRPC_LARGEST_MESSAGE = 2**31 - 1  # gRPC's ceiling on any one message
# The longest timeout a flag or a client takes (about 31 years): past about 9e9 s gRPC's deadline overflows,
# and the call failed DEADLINE_EXCEEDED at once.
LONGEST_SECONDS = 1e9

PICTURE_ID = re.compile(r"[0-9a-f]{64}")  # a picture's id: the sha256 of its bytes, in lowercase hex


def metadata_bytes(metadata: Mapping[str, Any]) -> int:
    """A picture's metadata as Milvus is sent it: compact UTF-8 JSON, not json.dumps's \\uXXXX for every
    non-ASCII character."""
    return len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode())
