"""Object-level rules of the apiserver that need no server state: errors, names, metadata,
the kind-specific touches (Secrets, Namespaces), and the core/events.k8s.io Event conversion.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from typing import Any

from api_schema import FieldError
from api_types import ResourceType


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


class ApiError(Exception):
    """A failed request, answered as a `Status` object with the same code and reason."""

    def __init__(self, code: int, reason: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        body = {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                'message': self.message, 'reason': self.reason, 'code': self.code}
        if self.details is not None:
            body['details'] = self.details
        return body


def _details(rtype: ResourceType, name: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {'kind': rtype.plural}
    if name:
        details['name'] = name
    if rtype.group:
        details['group'] = rtype.group
    return details


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, 'NotFound', f'{rtype.group_resource} "{name}" not found',
                    _details(rtype, name))


def already_exists(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(409, 'AlreadyExists', f'{rtype.group_resource} "{name}" already exists',
                    _details(rtype, name))


def conflict(rtype: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(409, 'Conflict',
                    f'Operation cannot be fulfilled on {rtype.group_resource} "{name}": {why}',
                    _details(rtype, name))


STALE = ('the object has been modified; please apply your changes to the latest version and '
         'try again')


def invalid(rtype: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    messages = [error.message for error in errors]
    summary = messages[0] if len(messages) == 1 else '[' + ', '.join(messages) + ']'
    details = {'name': name, 'kind': rtype.kind,
               'causes': [{'reason': e.reason, 'message': e.body, 'field': e.field}
                          for e in errors]}
    if rtype.group:
        details['group'] = rtype.group
    return ApiError(422, 'Invalid', f'{rtype.qualified_kind} "{name}" is invalid: {summary}',
                    details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, 'BadRequest', message)


def forbidden(rtype: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(403, 'Forbidden', f'{rtype.group_resource} "{name}" is forbidden: {why}',
                    _details(rtype, name))


def server_not_found() -> ApiError:
    return ApiError(404, 'NotFound', 'the server could not find the requested resource',
                    {})


# ---------------------------------------------------------------- names

_SUBDOMAIN = re.compile(r'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')
_LABEL = re.compile(r'[a-z0-9]([-a-z0-9]*[a-z0-9])?')


def name_errors(rtype: ResourceType, name: str) -> list[FieldError]:
    """Names are DNS subdomains (Namespaces: DNS labels), as the real server requires."""
    if rtype.plural == 'namespaces':
        if len(name) > 63 or not _LABEL.fullmatch(name):
            return [FieldError('metadata.name', 'Invalid', name,
                               "a lowercase RFC 1123 label must consist of lower case "
                               "alphanumeric characters or '-', and must start and end with "
                               "an alphanumeric character (e.g. 'my-name',  or '123-abc', "
                               "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")]
        return []
    if len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
        return [FieldError('metadata.name', 'Invalid', name,
                           "a lowercase RFC 1123 subdomain must consist of lower case "
                           "alphanumeric characters, '-' or '.', and must start and end with "
                           "an alphanumeric character (e.g. 'example.com', regex used for "
                           "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]"
                           "([-a-z0-9]*[a-z0-9])?)*')")]
    return []


# ---------------------------------------------------------------- metadata

SERVER_OWNED_META = ('uid', 'creationTimestamp', 'deletionTimestamp',
                     'deletionGracePeriodSeconds', 'generation', 'name', 'namespace')


def drop_empty_metadata(meta: dict[str, Any]) -> None:
    """Go's `omitempty`: empty finalizers, labels, annotations and owners are not stored.

    kube-rs's finalizer helper depends on it: it tests `/metadata/finalizers` against null.
    """
    for key in ('finalizers', 'labels', 'annotations', 'ownerReferences', 'managedFields'):
        if key in meta and not meta[key]:
            del meta[key]
    meta.pop('selfLink', None)


def spec_part(obj: dict[str, Any], status_subresource: bool) -> dict[str, Any]:
    """What a generation counts: everything but metadata (and status, with a subresource)."""
    skipped = {'metadata', 'apiVersion', 'kind'} | ({'status'} if status_subresource else set())
    return {key: value for key, value in obj.items() if key not in skipped}


# ---------------------------------------------------------------- kind-specific touches

def admit_secret(obj: dict[str, Any]) -> list[FieldError]:
    """`stringData` is write-only: merged into `data` as base64, as the real server does."""
    data = dict(obj.get('data') or {})
    for key, value in (obj.pop('stringData', None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    errors = []
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError, TypeError):
            errors.append(FieldError(f'data[{key}]', 'Invalid', '<secret contents redacted>',
                                     'illegal base64 data'))
    if data:
        obj['data'] = data
    else:
        obj.pop('data', None)
    obj.setdefault('type', 'Opaque')
    return errors


def admit_namespace(obj: dict[str, Any]) -> None:
    meta = obj['metadata']
    meta.setdefault('labels', {})['kubernetes.io/metadata.name'] = meta['name']
    obj['spec'] = {'finalizers': ['kubernetes']}
    phase = 'Terminating' if meta.get('deletionTimestamp') else 'Active'
    obj['status'] = {'phase': phase}


# ---------------------------------------------------------------- Events: core/v1 <-> events/v1

# (events.k8s.io/v1 field, core v1 field): the renames of the real conversion.
_EVENT_FIELDS = [
    ('regarding', 'involvedObject'), ('note', 'message'),
    ('reportingController', 'reportingComponent'), ('deprecatedSource', 'source'),
    ('deprecatedFirstTimestamp', 'firstTimestamp'), ('deprecatedLastTimestamp', 'lastTimestamp'),
    ('deprecatedCount', 'count'),
]


def event_to_core(event: dict[str, Any]) -> dict[str, Any]:
    core = {key: value for key, value in event.items()}
    for new, old in _EVENT_FIELDS:
        if new in core:
            core[old] = core.pop(new)
    core['apiVersion'] = 'v1'
    core.setdefault('involvedObject', {})
    return core


def event_from_core(core: dict[str, Any]) -> dict[str, Any]:
    event = {key: value for key, value in core.items()}
    for new, old in _EVENT_FIELDS:
        if old in event:
            event[new] = event.pop(old)
    event['apiVersion'] = 'events.k8s.io/v1'
    return event
