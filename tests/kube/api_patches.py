"""The PATCH flavours of the Kubernetes API, applied to plain JSON-shaped dicts.

* `application/merge-patch+json`: RFC 7386.
* `application/strategic-merge-patch+json`: approximated as a merge patch that understands the
  `$patch`, `$deleteFromPrimitiveList/…` and `$setElementOrder/…` directives and merges the
  primitive `metadata.finalizers` list; lists of objects are replaced whole (the real server
  merges some of them by key, e.g. containers by name — no gremesh test depends on that).
* `application/json-patch+json`: RFC 6902 through the `jsonpatch` package, except that `test`
  follows the Go library the apiserver uses: a missing member tests equal to `null` (kube-rs
  finalizer handling relies on this).
* `application/apply-patch+yaml` (server-side apply): approximated as a merge patch of the
  applied configuration, after removing the fields that the same field manager applied last
  time and no longer applies (`release_fields`). Lists are atomic; conflicts between managers
  are not detected (as if every apply had `force=true`).
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

MERGE = 'application/merge-patch+json'
STRATEGIC = 'application/strategic-merge-patch+json'
JSON_PATCH = 'application/json-patch+json'
APPLY = 'application/apply-patch+yaml'
APPLY_CBOR = 'application/apply-patch+cbor'
KNOWN = (MERGE, STRATEGIC, JSON_PATCH, APPLY)

# Primitive lists that the strategic merge patch unions instead of replacing.
_MERGED_PRIMITIVE_LISTS = {'finalizers'}


class PatchError(ValueError):
    """A patch that cannot be applied; the server answers 422 (or 400 for malformed ones)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, `null` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch, approximated (see the module docs)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get('$patch') == 'delete':
        return None
    if patch.get('$patch') == 'replace':
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith('$')}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith('$deleteFromPrimitiveList/'):
            name = key.split('/', 1)[1]
            result[name] = [v for v in result.get(name) or [] if v not in (value or [])]
        elif key.startswith('$'):
            continue  # $setElementOrder, $retainKeys: ordering and pruning hints
        elif value is None:
            result.pop(key, None)
        elif key in _MERGED_PRIMITIVE_LISTS and isinstance(value, list):
            merged = list(result.get(key) or [])
            merged += [v for v in value if v not in merged]
            result[key] = merged
        else:
            merged_value = strategic_merge_patch(result.get(key), value)
            if merged_value is None:
                result.pop(key, None)
            else:
                result[key] = merged_value
    return result


def _test_like_go(doc: Any, operation: dict[str, Any]) -> None:
    """A JSON patch `test`, where a missing member (under an existing parent) equals null."""
    if 'value' not in operation:
        raise PatchError("test operation has no 'value'")
    pointer = jsonpointer.JsonPointer(operation.get('path', ''))
    try:
        parent, part = pointer.to_last(doc)
    except jsonpointer.JsonPointerException as exc:
        raise PatchError(f"test operation does not apply: is missing path: {pointer.path}") from exc
    if part is None:
        value = parent
    else:
        try:
            value = pointer.walk(parent, part)
        except jsonpointer.JsonPointerException:
            value = None
    if value != operation['value'] or (value is None) != (operation['value'] is None):
        raise PatchError(f"testing value {pointer.path} failed")


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 with the Go library's `test` semantics."""
    if not isinstance(operations, list):
        raise PatchError('a JSON patch must be a list of operations')
    doc = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or 'op' not in operation:
            raise PatchError(f'invalid JSON patch operation: {operation!r}')
        if operation['op'] == 'test':
            _test_like_go(doc, operation)
            continue
        try:
            doc = jsonpatch.apply_patch(doc, [operation], in_place=True)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise PatchError(f"{operation['op']} operation does not apply: {exc}") from exc
    return doc


def apply_patch(target: dict[str, Any], patch: Any, content_type: str) -> dict[str, Any]:
    """Apply a patch of the given content type to a copy of `target`."""
    if content_type == JSON_PATCH:
        result = json_patch(target, patch)
    elif not isinstance(patch, dict):
        raise PatchError(f'a {content_type} patch must be a JSON object')
    elif content_type == STRATEGIC:
        result = strategic_merge_patch(target, patch)
    else:  # merge patch and the server-side apply approximation
        result = merge_patch(target, patch)
    if not isinstance(result, dict):
        raise PatchError('the patch did not produce an object')
    return result


def release_fields(target: dict[str, Any], previous: Any, current: Any,
                   path: str = '') -> dict[str, Any]:
    """`target` without the fields present in `previous` but not in `current` (server-side
    apply by one field manager: what it stops applying, it stops owning, and it goes)."""
    if not isinstance(previous, dict) or not isinstance(target, dict):
        return target
    current = current if isinstance(current, dict) else {}
    kept = {'': {'apiVersion', 'kind', 'metadata'}, '.metadata': {'name', 'namespace'}}
    result = dict(target)
    for key, value in previous.items():
        if key not in result:
            continue
        if key in kept.get(path, ()) and key not in current:
            continue
        if isinstance(value, dict) and isinstance(result[key], dict):
            # Only the owned part of a map goes; a map left empty goes with it.
            result[key] = release_fields(result[key], value, current.get(key), f'{path}.{key}')
            if key not in current and not result[key]:
                del result[key]
        elif key not in current:
            del result[key]
    return result
