"""The resource types the stand-in serves: built-ins from kmock's catalog, and CRD-defined ones.

A `ResourceType` is one group/version/plural as a client addresses it; several may share one
storage (core `v1` Events and `events.k8s.io/v1` Events are the same objects, as in the real
server, converted on the way in and out).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import kmock

from api_schema import FieldError

ALL_VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch']

# Groups of kmock's bundled catalog that a plain object store can stand in for. Left out:
# virtual resources (reviews), aggregated APIs (metrics), and CRD-backed extras of the
# cluster the catalog was taken from (gateway API).
SERVED_BUILTIN_GROUPS = {
    '', 'apps', 'batch', 'coordination.k8s.io', 'events.k8s.io', 'apiextensions.k8s.io',
    'rbac.authorization.k8s.io', 'policy', 'networking.k8s.io', 'scheduling.k8s.io',
    'storage.k8s.io', 'node.k8s.io', 'discovery.k8s.io', 'admissionregistration.k8s.io',
    'certificates.k8s.io',
}
SKIPPED_CORE = {'bindings', 'componentstatuses'}

# Built-ins whose objects carry a `metadata.generation` bumped on spec changes.
GENERATION_GROUPS = {'apps', 'batch', 'policy', 'networking.k8s.io', 'apiextensions.k8s.io'}

EVENTS_STORAGE = kmock.resource('events.k8s.io', 'v1', 'events')


@dataclass
class ResourceType:
    """One served group/version/resource and what the server needs to know to serve it."""
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str
    subresources: set[str]
    storage: kmock.resource
    crd: dict[str, Any] | None = None  # the defining CRD, for custom resources
    crd_version: dict[str, Any] = field(default_factory=dict)  # its entry in spec.versions

    @property
    def group_version(self) -> str:
        return f'{self.group}/{self.version}' if self.group else self.version

    @property
    def group_resource(self) -> str:
        """`plural.group` as error messages name a resource (just `plural` for core)."""
        return f'{self.plural}.{self.group}' if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f'{self.kind}.{self.group}' if self.group else self.kind

    @property
    def status_subresource(self) -> bool:
        return 'status' in self.subresources

    @property
    def tracks_generation(self) -> bool:
        return self.crd is not None or self.group in GENERATION_GROUPS

    @property
    def schema(self) -> dict[str, Any] | None:
        return ((self.crd_version.get('schema') or {}).get('openAPIV3Schema')
                if self.crd is not None else None)

    @property
    def printer_columns(self) -> list[dict[str, Any]] | None:
        return self.crd_version.get('additionalPrinterColumns')


def builtin_types(catalog: kmock.ResourcesArray) -> list[tuple[kmock.resource, ResourceType]]:
    """The built-in types to serve, from kmock's bundled discovery catalog."""
    result = []
    for res in list(catalog):
        info = catalog[res]
        if res.group not in SERVED_BUILTIN_GROUPS or res.plural in SKIPPED_CORE:
            continue
        storage = EVENTS_STORAGE if res.plural == 'events' else res
        result.append((res, ResourceType(
            group=res.group, version=res.version, plural=res.plural, kind=info.kind,
            namespaced=bool(info.namespaced), singular=info.singular or info.kind.lower(),
            subresources=set(info.subresources), storage=storage)))
    return result


def crd_problems(crd: dict[str, Any]) -> list[FieldError]:
    """What makes a CRD unservable (a small part of the real server's CRD validation)."""
    spec = crd.get('spec') or {}
    names = spec.get('names') or {}
    problems = [FieldError(path, 'Required') for path, value in (
        ('spec.group', spec.get('group')), ('spec.names.plural', names.get('plural')),
        ('spec.names.kind', names.get('kind')), ('spec.versions', spec.get('versions')))
        if not value]
    if spec.get('scope') not in ('Namespaced', 'Cluster'):
        problems.append(FieldError('spec.scope', 'Unsupported', spec.get('scope'),
                                   'supported values: "Cluster", "Namespaced"'))
    versions = spec.get('versions') or []
    if versions and sum(1 for v in versions if v.get('storage')) != 1:
        problems.append(FieldError('spec.versions', 'Invalid', len(versions),
                                   'must have exactly one version marked as storage version'))
    name = crd.get('metadata', {}).get('name')
    if name != f"{names.get('plural')}.{spec.get('group')}":
        problems.append(FieldError('metadata.name', 'Invalid', name,
                                   'must be spec.names.plural+"."+spec.group'))
    return problems


def crd_types(crd: dict[str, Any]) -> list[tuple[kmock.resource, ResourceType]]:
    """The served versions of a (valid) CRD as resource types sharing one storage."""
    spec = crd['spec']
    names = spec['names']
    storage_version = next(v['name'] for v in spec['versions'] if v.get('storage'))
    storage = kmock.resource(spec['group'], storage_version, names['plural'])
    result = []
    for version in spec['versions']:
        if not version.get('served', True):
            continue
        subresources = set((version.get('subresources') or {}).keys())
        res = kmock.resource(spec['group'], version['name'], names['plural'])
        result.append((res, ResourceType(
            group=spec['group'], version=version['name'], plural=names['plural'],
            kind=names['kind'], namespaced=spec['scope'] == 'Namespaced',
            singular=names.get('singular') or names['kind'].lower(),
            subresources=subresources, storage=storage, crd=crd, crd_version=version)))
    return result


def resource_info(rtype: ResourceType) -> kmock.ResourceInfo:
    """kmock's discovery record for a type."""
    names = (rtype.crd or {}).get('spec', {}).get('names', {})
    return kmock.ResourceInfo(
        namespaced=rtype.namespaced, kind=rtype.kind, singular=rtype.singular,
        verbs=set(ALL_VERBS), shortnames=set(names.get('shortNames') or []),
        categories=set(names.get('categories') or []), subresources=set(rtype.subresources))


def crd_status(crd: dict[str, Any], now: str, terminating: bool) -> dict[str, Any]:
    """What the apiextensions controllers would write into a CRD's status."""
    spec = crd['spec']
    accepted = copy.deepcopy(spec['names'])
    accepted.setdefault('singular', spec['names']['kind'].lower())
    accepted.setdefault('listKind', spec['names']['kind'] + 'List')
    storage = next(v['name'] for v in spec['versions'] if v.get('storage'))
    stored = list((crd.get('status') or {}).get('storedVersions') or [])
    if storage not in stored:
        stored.append(storage)
    conditions = [
        {'type': 'NamesAccepted', 'status': 'True', 'reason': 'NoConflicts',
         'message': 'no conflicts found', 'lastTransitionTime': now},
        {'type': 'Established', 'status': 'True', 'reason': 'InitialNamesAccepted',
         'message': 'the initial names have been accepted', 'lastTransitionTime': now},
    ]
    if terminating:
        conditions.append({'type': 'Terminating', 'status': 'True',
                           'reason': 'InstanceDeletionInProgress',
                           'message': 'CustomResource deletion is in progress',
                           'lastTransitionTime': now})
    old = {c.get('type'): c for c in (crd.get('status') or {}).get('conditions') or []}
    for condition in conditions:
        previous = old.get(condition['type'])
        if previous and previous.get('status') == condition['status']:
            condition['lastTransitionTime'] = previous.get('lastTransitionTime', now)
    return {'acceptedNames': accepted, 'conditions': conditions, 'storedVersions': stored}


# ---------------------------------------------------------------- OpenAPI v3 (for kubectl)

def _schema_name(rtype: ResourceType) -> str:
    group = '.'.join(reversed(rtype.group.split('.'))) if rtype.group else 'io.k8s.api.core'
    return f'{group}.{rtype.version}.{rtype.kind}'


def openapi_document(types: list[ResourceType]) -> dict[str, Any]:
    """A minimal OpenAPI v3 document for one group/version.

    kubectl reads it to decide that the server validates fields itself (the PATCH operations
    accept `fieldValidation`), so that `kubectl apply` needs no `--validate=false`. CRD schemas
    are included for `kubectl explain`. No strategic-merge content type is advertised, so
    kubectl computes merge patches for custom resources, as against a real server.
    """
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rtype in types:
        prefix = f'/apis/{rtype.group_version}' if rtype.group else f'/api/{rtype.version}'
        scope = '/namespaces/{namespace}' if rtype.namespaced else ''
        gvk = {'group': rtype.group, 'version': rtype.version, 'kind': rtype.kind}
        query = [{'name': name, 'in': 'query', 'schema': {'type': 'string'}}
                 for name in ('dryRun', 'fieldManager', 'fieldValidation', 'force')]
        content = {ct: {'schema': {'type': 'object'}} for ct in (
            'application/json-patch+json', 'application/merge-patch+json',
            'application/apply-patch+yaml')}
        paths[f'{prefix}{scope}/{rtype.plural}/{{name}}'] = {
            'patch': {'x-kubernetes-group-version-kind': gvk, 'parameters': query,
                      'requestBody': {'content': content},
                      'responses': {'200': {'description': 'OK'}}}}
        schema = copy.deepcopy(rtype.schema) if rtype.schema else {'type': 'object'}
        schema['x-kubernetes-group-version-kind'] = [gvk]
        schemas[_schema_name(rtype)] = schema
    return {'openapi': '3.0.0', 'info': {'title': 'Kubernetes', 'version': 'v1.32.0'},
            'paths': paths, 'components': {'schemas': schemas}}


def document_hash(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32].upper()
