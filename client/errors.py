"""The SDK's one exception type: every failure carries the gRPC status and the server's message."""

import grpc


class ImageSearchError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, target: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.target = target

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @classmethod
    def from_rpc(cls, error: grpc.RpcError, service: str, target: str) -> "ImageSearchError":
        code = error.code()
        message = error.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE and (
            "connect" in message.lower() or "unavailable" in message.lower()
        ):
            message = f"cannot reach the {service} at {target}: {message}"
        return cls(code, message, target)
