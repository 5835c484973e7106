"""What the apiserver does with a custom object against its CRD's `openAPIV3Schema`.

In the real server's order: null values of non-nullable fields and fields the schema does not
know are pruned (the latter reported as unknown fields), then `default`s are filled in, then
the object is validated. Messages follow the real server's wording closely enough that a test
can look for the field path and the broken rule.

Supported: `type`, `nullable`, `enum`, `pattern`, `minLength`/`maxLength`, `minimum`/`maximum`
(with the exclusive flags), `multipleOf`, `minItems`/`maxItems`, `uniqueItems`,
`minProperties`/`maxProperties`, `required`, `properties`, `additionalProperties`, `items`,
`allOf`/`anyOf`/`oneOf`/`not`, `x-kubernetes-preserve-unknown-fields`,
`x-kubernetes-int-or-string`, `x-kubernetes-embedded-resource`, and the `ipv4`, `ipv6`, `cidr`,
`date-time`, `date`, `uuid`, `mac`, `hostname` and `byte` string formats.
Not evaluated: CEL rules (`x-kubernetes-validations`) — they need a CEL interpreter; the
operator must not count on the stand-in to enforce them.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import functools
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

OBJECT_META_FIELDS = {
    'name', 'generateName', 'namespace', 'selfLink', 'uid', 'resourceVersion', 'generation',
    'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'labels',
    'annotations', 'ownerReferences', 'finalizers', 'managedFields',
}


@dataclass
class FieldError:
    """One broken rule at one field, rendered like the apiserver's field errors."""
    field: str
    kind: str  # Required, Invalid, Unsupported, TooMany, TooLong, Duplicate
    value: Any = None
    detail: str = ''

    REASONS = {
        'Required': 'FieldValueRequired', 'Invalid': 'FieldValueInvalid',
        'Unsupported': 'FieldValueNotSupported', 'TooMany': 'FieldValueTooMany',
        'TooLong': 'FieldValueTooLong', 'Duplicate': 'FieldValueDuplicate',
    }

    @property
    def reason(self) -> str:
        return self.REASONS[self.kind]

    @property
    def body(self) -> str:
        """The message without the field, as a Status cause carries it."""
        if self.kind == 'Required':
            return 'Required value'
        if self.kind == 'TooMany':
            return f'Too many: {self.value}: {self.detail}'
        if self.kind == 'TooLong':
            return f'Too long: {self.detail}'
        if self.kind == 'Duplicate':
            return f'Duplicate value: {show(self.value)}'
        label = 'Unsupported value' if self.kind == 'Unsupported' else 'Invalid value'
        return f'{label}: {show(self.value)}: {self.detail}'

    @property
    def message(self) -> str:
        return f'{self.field}: {self.body}'


def show(value: Any) -> str:
    """A value the way Go's field errors print it: strings quoted, integral floats as ints."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if value is None:
        return 'null'
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(',', ':'))


def _type_name(value: Any) -> str:
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'boolean'
    if isinstance(value, int):
        return 'integer'
    if isinstance(value, float):
        return 'integer' if value.is_integer() else 'number'
    if isinstance(value, str):
        return 'string'
    if isinstance(value, list):
        return 'array'
    return 'object'


def _has_type(value: Any, wanted: str) -> bool:
    actual = _type_name(value)
    return actual == wanted or (wanted == 'number' and actual == 'integer')


def _join(path: str, key: str) -> str:
    return f'{path}.{key}' if path else key


# ---------------------------------------------------------------- pruning and defaulting

def _knows_unknown(schema: dict[str, Any]) -> bool:
    return bool(schema.get('x-kubernetes-preserve-unknown-fields'))


def prune(value: Any, schema: dict[str, Any], path: str, unknown: list[str],
          root: bool = False) -> Any:
    """Drop unknown fields (recording their paths) and nulls of non-nullable fields."""
    if isinstance(value, dict):
        properties = schema.get('properties') or {}
        additional = schema.get('additionalProperties')
        embedded = root or schema.get('x-kubernetes-embedded-resource')
        result: dict[str, Any] = {}
        for key, item in value.items():
            child_path = _join(path, key)
            if embedded and key in ('apiVersion', 'kind'):
                result[key] = item
            elif embedded and key == 'metadata' and isinstance(item, dict):
                result[key] = prune_metadata(item, child_path, unknown)
            elif key in properties:
                child = properties[key]
                if item is None and not child.get('nullable'):
                    continue
                result[key] = prune(item, child, child_path, unknown)
            elif isinstance(additional, dict):
                if item is None and not additional.get('nullable'):
                    continue
                result[key] = prune(item, additional, child_path, unknown)
            elif additional is True or _knows_unknown(schema):
                result[key] = item
            else:
                unknown.append(child_path)
        return result
    if isinstance(value, list) and isinstance(schema.get('items'), dict):
        items = schema['items']
        return [prune(item, items, f'{path}[{index}]', unknown)
                for index, item in enumerate(value)]
    return value


def prune_metadata(meta: dict[str, Any], path: str, unknown: list[str]) -> dict[str, Any]:
    """Keep the ObjectMeta fields of a metadata block."""
    kept = {}
    for key, value in meta.items():
        if key in OBJECT_META_FIELDS:
            kept[key] = value
        else:
            unknown.append(_join(path, key))
    return kept


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Fill in `default`s of absent properties, recursively (also inside list items)."""
    if isinstance(value, dict):
        properties = schema.get('properties') or {}
        for key, child in properties.items():
            if key not in value and 'default' in child:
                value[key] = copy.deepcopy(child['default'])
            if key in value:
                value[key] = apply_defaults(value[key], child)
        additional = schema.get('additionalProperties')
        if isinstance(additional, dict):
            for key in value:
                if key not in properties:
                    value[key] = apply_defaults(value[key], additional)
    elif isinstance(value, list) and isinstance(schema.get('items'), dict):
        return [apply_defaults(item, schema['items']) for item in value]
    return value


# ---------------------------------------------------------------- validation

_FORMAT_CHECKS = {}


def _format(name: str):
    def register(check):
        _FORMAT_CHECKS[name] = check
        return check
    return register


@_format('ipv4')
def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


@_format('ipv6')
def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
        return True
    except ValueError:
        return False


@_format('cidr')
def _is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
        return '/' in text
    except ValueError:
        return False


@_format('date-time')
def _is_datetime(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
        return 'T' in text or 't' in text
    except ValueError:
        return False


@_format('date')
def _is_date(text: str) -> bool:
    try:
        datetime.date.fromisoformat(text)
        return True
    except ValueError:
        return False


@_format('uuid')
def _is_uuid(text: str) -> bool:
    return re.fullmatch(r'[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}', text) is not None


@_format('mac')
def _is_mac(text: str) -> bool:
    return re.fullmatch(r'([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}', text) is not None


@_format('hostname')
def _is_hostname(text: str) -> bool:
    label = r'[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?'
    return len(text) <= 253 and re.fullmatch(rf'{label}(\.{label})*', text) is not None


@_format('byte')
def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
        return True
    except (binascii.Error, ValueError):
        return False


def _number_checks(value: float, schema: dict[str, Any], path: str, errors: list[FieldError]):
    if 'minimum' in schema:
        bound = schema['minimum']
        exclusive = schema.get('exclusiveMinimum') is True
        if value < bound or (exclusive and value == bound):
            relation = 'greater than' if exclusive else 'greater than or equal to'
            errors.append(FieldError(path, 'Invalid', value,
                                     f'{path} in body should be {relation} {show(bound)}'))
    if 'maximum' in schema:
        bound = schema['maximum']
        exclusive = schema.get('exclusiveMaximum') is True
        if value > bound or (exclusive and value == bound):
            relation = 'less than' if exclusive else 'less than or equal to'
            errors.append(FieldError(path, 'Invalid', value,
                                     f'{path} in body should be {relation} {show(bound)}'))
    factor = schema.get('multipleOf')
    if factor and (value / factor) != int(value / factor):
        errors.append(FieldError(path, 'Invalid', value,
                                 f'{path} in body should be a multiple of {show(factor)}'))


@functools.lru_cache(maxsize=256)
def _go_regex(pattern: str) -> re.Pattern[str]:
    """Compile an RE2 pattern so that `$` means end of text, as in Go (not before a newline)."""
    out, in_class, escaped = [], False, False
    for char in pattern:
        if escaped:
            out.append('Z' if char == 'z' else char)
            escaped = False
        elif char == '\\':
            out.append(char)
            escaped = True
        elif char == '[' and not in_class:
            in_class = True
            out.append(char)
        elif char == ']' and in_class:
            in_class = False
            out.append(char)
        elif char == '$' and not in_class:
            out.append(r'\Z')
        else:
            out.append(char)
    return re.compile(''.join(out))


def _string_checks(value: str, schema: dict[str, Any], path: str, errors: list[FieldError]):
    if 'maxLength' in schema and len(value) > schema['maxLength']:
        errors.append(FieldError(path, 'TooLong', value,
                                 f"may not be more than {schema['maxLength']} bytes"))
    if 'minLength' in schema and len(value) < schema['minLength']:
        errors.append(FieldError(path, 'Invalid', value,
                                 f"{path} in body should be at least {schema['minLength']} "
                                 'chars long'))
    pattern = schema.get('pattern')
    if pattern is not None and _go_regex(pattern).search(value) is None:
        errors.append(FieldError(path, 'Invalid', value,
                                 f"{path} in body should match '{pattern}'"))
    check = _FORMAT_CHECKS.get(schema.get('format', ''))
    if check is not None and not check(value):
        errors.append(FieldError(path, 'Invalid', value,
                                 f"{path} in body must be of type {schema['format']}: "
                                 f'{json.dumps(value)}'))


def _array_checks(value: list, schema: dict[str, Any], path: str, errors: list[FieldError]):
    if 'maxItems' in schema and len(value) > schema['maxItems']:
        errors.append(FieldError(path, 'TooMany', len(value),
                                 f"must have at most {schema['maxItems']} items"))
    if 'minItems' in schema and len(value) < schema['minItems']:
        errors.append(FieldError(path, 'Invalid', len(value),
                                 f"{path} in body should have at least {schema['minItems']} "
                                 'items'))
    if schema.get('uniqueItems') or schema.get('x-kubernetes-list-type') == 'set':
        seen: list[Any] = []
        for item in value:
            if item in seen:
                errors.append(FieldError(path, 'Duplicate', item))
                break
            seen.append(item)
    keys = schema.get('x-kubernetes-list-map-keys')
    if schema.get('x-kubernetes-list-type') == 'map' and keys:
        seen_keys: set[str] = set()
        for index, item in enumerate(value):
            key = json.dumps([item.get(k) if isinstance(item, dict) else None for k in keys])
            if key in seen_keys:
                errors.append(FieldError(f'{path}[{index}]', 'Duplicate', item))
            seen_keys.add(key)
    items = schema.get('items')
    if isinstance(items, dict):
        for index, item in enumerate(value):
            validate(item, items, f'{path}[{index}]', errors)


def _object_checks(value: dict, schema: dict[str, Any], path: str, errors: list[FieldError]):
    for name in schema.get('required') or []:
        if name not in value:
            errors.append(FieldError(_join(path, name), 'Required'))
    if 'maxProperties' in schema and len(value) > schema['maxProperties']:
        errors.append(FieldError(path, 'TooMany', len(value),
                                 f"must have at most {schema['maxProperties']} items"))
    if 'minProperties' in schema and len(value) < schema['minProperties']:
        errors.append(FieldError(path, 'Invalid', len(value),
                                 f"{path} in body should have at least "
                                 f"{schema['minProperties']} properties"))
    properties = schema.get('properties') or {}
    additional = schema.get('additionalProperties')
    for key, item in value.items():
        if key in properties:
            validate(item, properties[key], _join(path, key), errors)
        elif isinstance(additional, dict):
            validate(item, additional, _join(path, key), errors)


def _combinator_checks(value: Any, schema: dict[str, Any], path: str,
                       errors: list[FieldError]):
    for sub in schema.get('allOf') or []:
        validate(value, sub, path, errors)
    if schema.get('anyOf'):
        if not any(not validate(value, sub, path, []) for sub in schema['anyOf']):
            errors.append(FieldError(path, 'Invalid', value,
                                     f'{path} in body must match at least one schema in anyOf'))
    if schema.get('oneOf'):
        passing = sum(1 for sub in schema['oneOf'] if not validate(value, sub, path, []))
        if passing != 1:
            errors.append(FieldError(path, 'Invalid', value,
                                     f'{path} in body must match exactly one schema in oneOf'))
    if isinstance(schema.get('not'), dict) and not validate(value, schema['not'], path, []):
        errors.append(FieldError(path, 'Invalid', value,
                                 f'{path} in body must not match the schema in not'))


def validate(value: Any, schema: dict[str, Any], path: str,
             errors: list[FieldError]) -> list[FieldError]:
    """Validate `value` against `schema`, appending to and returning `errors`."""
    if value is None:
        if not schema.get('nullable') and schema.get('type'):
            errors.append(FieldError(path, 'Invalid', None,
                                     f"{path} in body must be of type {schema['type']}: \"null\""))
        return errors
    wanted = schema.get('type')
    if schema.get('x-kubernetes-int-or-string'):
        if _type_name(value) not in ('integer', 'string'):
            errors.append(FieldError(path, 'Invalid', value,
                                     f'{path} in body must be of type integer,string: '
                                     f'"{_type_name(value)}"'))
            return errors
    elif wanted and not _has_type(value, wanted):
        errors.append(FieldError(path, 'Invalid', value,
                                 f'{path} in body must be of type {wanted}: '
                                 f'"{_type_name(value)}"'))
        return errors
    if 'enum' in schema and value not in schema['enum']:
        supported = ', '.join(show(option) for option in schema['enum'])
        errors.append(FieldError(path, 'Unsupported', value, f'supported values: {supported}'))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _number_checks(value, schema, path, errors)
    elif isinstance(value, str):
        _string_checks(value, schema, path, errors)
    elif isinstance(value, list):
        _array_checks(value, schema, path, errors)
    elif isinstance(value, dict):
        _object_checks(value, schema, path, errors)
    _combinator_checks(value, schema, path, errors)
    return errors


def process(obj: dict[str, Any], schema: dict[str, Any]
            ) -> tuple[dict[str, Any], list[str], list[FieldError]]:
    """Prune, default and validate a whole custom object.

    Returns the object to store, the paths of the unknown fields that were dropped, and the
    validation errors (empty when the object is valid).
    """
    unknown: list[str] = []
    pruned = prune(obj, schema, '', unknown, root=True)
    defaulted = apply_defaults(pruned, schema)
    body = {k: v for k, v in defaulted.items() if k not in ('apiVersion', 'kind', 'metadata')}
    shape = {k: v for k, v in schema.items() if k != 'required'}
    errors = validate(body, shape, '', [])
    for name in schema.get('required') or []:
        if name not in defaulted:
            errors.append(FieldError(name, 'Required'))
    return defaulted, unknown, errors
