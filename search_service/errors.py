"""One error type for everything the search service refuses or cannot do, with the status a caller gets."""

import grpc


class ServiceError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ServiceErrorInterceptor(grpc.ServerInterceptor):
    """Turns a ServiceError raised by any handler into its gRPC status and message."""

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if handler.unary_unary:
            unary = handler.unary_unary

            def unary_with_status(request, context):  # type: ignore[no-untyped-def]
                try:
                    return unary(request, context)
                except ServiceError as error:
                    context.abort(error.code, error.message)

            return grpc.unary_unary_rpc_method_handler(
                unary_with_status, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream:
            stream = handler.stream_stream

            def stream_with_status(request_iterator, context):  # type: ignore[no-untyped-def]
                try:
                    yield from stream(request_iterator, context)
                except ServiceError as error:
                    context.abort(error.code, error.message)

            return grpc.stream_stream_rpc_method_handler(
                stream_with_status, handler.request_deserializer, handler.response_serializer
            )
        return handler
