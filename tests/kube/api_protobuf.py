"""Just enough of the Kubernetes protobuf encoding for `kubectl create namespace|secret|
configmap|serviceaccount`, which send protobuf bodies and do not fall back to JSON.

The envelope is `k8s\\0` followed by a `runtime.Unknown` message (typeMeta = 1, raw = 2); raw
holds the object. Only the fields those generators fill in are decoded; other kinds are
refused with 415, and `kubectl create -f` / `kubectl apply` (JSON) work for every kind.
"""

from __future__ import annotations

import base64
from typing import Any, Callable

MAGIC = b'k8s\x00'


class ProtobufError(ValueError):
    """A body this decoder cannot read."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ProtobufError('truncated varint')
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs; varints as ints, length-delimited values as bytes."""
    fields, pos = [], 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ProtobufError(f'unsupported wire type {wire}')
        fields.append((number, value))
    return fields


def _text(value: Any) -> str:
    return value.decode('utf-8')


def _map(decode_value: Callable[[bytes], Any]) -> Callable:
    def entry(value: bytes) -> tuple[str, Any]:
        parts = dict(_fields(value))
        return _text(parts.get(1, b'')), decode_value(parts.get(2, b''))
    return entry


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


# field number -> (JSON name, decoder, how: 'one' | 'list' | 'map')
_OBJECT_META = {1: ('name', _text, 'one'), 2: ('generateName', _text, 'one'),
                3: ('namespace', _text, 'one'), 11: ('labels', _map(_text), 'map'),
                12: ('annotations', _map(_text), 'map'), 14: ('finalizers', _text, 'list')}


def _message(schema: dict[int, tuple[str, Callable, str]]) -> Callable[[bytes], dict]:
    def decode(data: bytes) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for number, value in _fields(data):
            if number not in schema:
                continue
            name, convert, how = schema[number]
            if how == 'map':
                key, item = convert(value)
                result.setdefault(name, {})[key] = item
            elif how == 'list':
                result.setdefault(name, []).append(convert(value))
            elif value != b'':  # Go writes empty strings; JSON would omit them
                result[name] = convert(value)
        return result
    return decode


_META = (1, ('metadata', _message(_OBJECT_META), 'one'))
_KINDS = {
    'Namespace': _message(dict([_META])),
    'Secret': _message(dict([_META, (2, ('data', _map(_b64), 'map')),
                             (3, ('type', _text, 'one')),
                             (4, ('stringData', _map(_text), 'map')),
                             (5, ('immutable', bool, 'one'))])),
    'ConfigMap': _message(dict([_META, (2, ('data', _map(_text), 'map')),
                                (3, ('binaryData', _map(_b64), 'map')),
                                (4, ('immutable', bool, 'one'))])),
    'ServiceAccount': _message(dict([_META, (4, ('automountServiceAccountToken', bool, 'one'))])),
}


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded object as the JSON-shaped dict the rest of the server handles."""
    if not body.startswith(MAGIC):
        raise ProtobufError('missing the k8s protobuf envelope')
    envelope = dict(_fields(body[len(MAGIC):]))
    type_meta = dict(_fields(envelope.get(1, b'')))
    api_version, kind = _text(type_meta.get(1, b'')), _text(type_meta.get(2, b''))
    if kind not in _KINDS:
        raise ProtobufError(f'protobuf bodies of kind {kind or "?"} are not supported; '
                            'send JSON or YAML (kubectl create -f / kubectl apply -f)')
    obj = _KINDS[kind](envelope.get(2, b''))
    return {'apiVersion': api_version, 'kind': kind, **obj}
