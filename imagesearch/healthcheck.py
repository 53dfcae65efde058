"""`python -m imagesearch.healthcheck [HOST:PORT]`: exit 0 when the service there reports SERVING.

For container HEALTHCHECKs; Kubernetes uses its own gRPC probes against the same health service.
"""

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .defaults import ENCODER_PORT


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imagesearch.healthcheck", description=__doc__)
    parser.add_argument(
        "address", nargs="?", default=f"127.0.0.1:{ENCODER_PORT}", help="HOST:PORT (default %(default)s)"
    )
    address = parser.parse_args(argv).address
    try:
        with grpc.insecure_channel(address) as channel:
            status = (
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            )
    except grpc.RpcError as error:
        print(f"{address}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    print(f"{address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
    return 0 if status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
