"""Protocol buffers' wire format for the few messages the services write by hand, where building them field by
field would cost Python work per element or a copy of every picture (the callers say how much)."""


def _varint(value: int) -> bytes:
    encoded = bytearray()
    while value > 0x7F:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def field_header(field_number: int, length: int) -> bytes:
    """What precedes the `length` bytes of a field of wire type 2 (bytes, a string, a message, or a packed
    repeated number): its tag and its length. The caller joins it with the payload, copying that once."""
    return bytes([field_number << 3 | 2]) + _varint(length)
