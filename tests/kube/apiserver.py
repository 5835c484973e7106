#!/usr/bin/env python3
"""A Kubernetes API server stand-in for gremesh tests, built on kmock's KubernetesEmulator.

    python3 tests/kube/apiserver.py --port 18443 --kubeconfig /tmp/x/kubeconfig

serves plain HTTP on 127.0.0.1, writes a kubeconfig for kubectl and kube-rs (namespace
`default`, a dummy token), prints one `ready` line on stdout and runs until killed.

What kmock gives and is used as is: the aiohttp server (`kmock.Server`), request recording,
the discovery endpoints with its bundled catalog of built-in resources (`/version`, `/api`,
`/apis`, `/apis/G`, `/apis/G/V`), and the object store with per-object history
(`server.objects`). What this subclass adds or replaces is listed in README.md; in short, every
verb on a resource is served here, because kmock's emulator merges every write into the object
and keeps no resource versions.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import copy
import json
import logging
import os
import random
import signal
import string
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiohttp.web
import attrs
import kmock
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import api_patches  # noqa: E402
import api_protobuf  # noqa: E402
import api_schema  # noqa: E402
import api_selectors  # noqa: E402
import api_tables  # noqa: E402
import api_types  # noqa: E402
from api_objects import (STALE, ApiError, already_exists, bad_request, conflict,  # noqa: E402
                         forbidden, invalid, not_found, now, server_not_found)
import api_objects  # noqa: E402
from api_types import ResourceType  # noqa: E402

log = logging.getLogger('apiserver')

SEED_NAMESPACES = ('default', 'kube-system', 'kube-public', 'kube-node-lease')
WATCH_LOG_SIZE = 20_000  # events kept for watches that resume from a resourceVersion
HISTORY_KEPT = 3  # versions kept per object in kmock's history
MAX_EVENTS = 2_000  # Event objects kept; the oldest go first (the real server expires them)
BOOKMARK_EVERY = 60.0  # seconds between watch bookmarks
WATCH_BACKLOG = 10_000  # a watcher further behind than this is cut off (and relists)
REQUESTS_KEPT = 200  # requests kept in kmock's request log


@dataclass
class LogEntry:
    """One committed change, as watches replay and stream it."""
    rv: int
    storage: kmock.resource
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]  # stored form, after the change (the last state for DELETED)
    old: dict[str, Any] | None  # stored form before the change


@dataclass(eq=False)
class Watcher:
    """One open watch: what it selects, and the events waiting to be written to it."""
    rtype: ResourceType
    selects: Callable[[dict[str, Any]], bool]
    pending: collections.deque = field(default_factory=collections.deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False


def _route(path: str) -> dict[str, str | None] | None:
    """Split a resource URL; None for paths that are not about a resource.

    kmock's own parser cannot be used: it fails on `/api/v1/namespaces` and reads
    `/api/v1/namespaces/NAME` as a namespace scope instead of the Namespace object.
    """
    parts = [part for part in path.split('/') if part]
    if len(parts) >= 3 and parts[0] == 'api':
        group, version, rest = '', parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == 'apis':
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    namespace_subresource = len(rest) == 3 and rest[2] in ('status', 'finalize')
    if rest[0] == 'namespaces' and len(rest) >= 3 and not namespace_subresource:
        namespace, rest = rest[1], rest[2:]
    return {'group': group, 'version': version, 'plural': rest[0], 'namespace': namespace,
            'name': rest[1] if len(rest) > 1 else None,
            'subresource': '/'.join(rest[2:]) or None}


def _decode_body(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError:
        try:
            return yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise bad_request(f'the body of the request cannot be decoded: {exc}') from exc


def _json(payload: Any, status: int = 200, warnings: list[str] | None = None
          ) -> aiohttp.web.Response:
    headers = {}
    if warnings:
        headers['Warning'] = ', '.join(
            '299 - ' + json.dumps(text) for text in warnings)
    return aiohttp.web.Response(text=json.dumps(payload, separators=(',', ':')), status=status,
                                content_type='application/json', headers=headers)


def _accepts(request: kmock.Request) -> str:
    """`Table`, `PartialObjectMetadata(List)` or `json`: the first of the Accept header we serve."""
    for media in str(request.headers.get('Accept') or '').split(','):
        kind, *params = [piece.strip() for piece in media.split(';')]
        options = dict(p.split('=', 1) for p in params if '=' in p)
        wanted = options.get('as')
        if wanted == 'Table' and options.get('g') == 'meta.k8s.io':
            return 'Table'
        if wanted in ('PartialObjectMetadata', 'PartialObjectMetadataList'):
            return wanted
        if wanted is None and kind in ('application/json', '*/*', 'application/*'):
            return 'json'
    return 'json'


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """kmock's KubernetesEmulator with the semantics a kube-rs operator and kubectl rely on."""

    verbose: bool = False
    watch_history: int = WATCH_LOG_SIZE
    max_events: int = MAX_EVENTS
    _rv: int = attrs.field(default=0, init=False)
    _types: dict[tuple[str, str, str], ResourceType] = attrs.field(factory=dict, init=False)
    _log: collections.deque = attrs.field(factory=collections.deque, init=False)
    _log_floor: int = attrs.field(default=0, init=False)
    _watchers: set = attrs.field(factory=set, init=False)
    _event_keys: collections.deque = attrs.field(factory=collections.deque, init=False)
    # Server-side apply: the last configuration each field manager applied, per object.
    _applied: dict[tuple, Any] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        catalog = kmock.ResourcesArray()
        catalog.load_bundled()
        for res, rtype in api_types.builtin_types(catalog):
            self._add_type(res, rtype, catalog[res])
        for name in SEED_NAMESPACES:
            self._create(self._types[('', 'v1', 'namespaces')], None,
                         {'metadata': {'name': name}}, {})

    # ------------------------------------------------------------ entry points

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Parse the request the way this server needs, then serve it (replaces kmock's)."""
        try:
            request = await self._parse(raw)
            response = await self._handle(request)
        except ApiError as exc:
            response = _json(exc.status(), exc.code)
        except kmock.KubernetesError as exc:  # from kmock's discovery endpoints
            response = _json(ApiError(exc.status, 'NotFound', exc.message or 'not found',
                                      {}).status(), exc.status)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not look like a network failure
            log.exception('failed: %s %s', raw.method, raw.path_qs)
            response = _json(ApiError(500, 'InternalError', f'internal error: {exc!r}').status(),
                             500)
        if self.verbose:
            log.info('%s %s -> %s', raw.method, raw.path_qs, response.status)
        return response

    async def _parse(self, raw: aiohttp.web.BaseRequest) -> kmock.Request:
        body = await raw.read()
        route = _route(raw.path)
        if body and 'protobuf' in (raw.content_type or ''):
            try:
                data = api_protobuf.decode(body)
            except api_protobuf.ProtobufError as exc:
                known = route and (route['group'], route['version'], route['plural']) in self._types
                if not known:
                    raise server_not_found() from exc
                raise ApiError(415, 'UnsupportedMediaType', str(exc)) from exc
        else:
            data = _decode_body(body)
        resource, namespace, name, subresource, action = None, None, None, None, None
        if route is not None:
            resource = kmock.resource(route['group'], route['version'], route['plural'])
            namespace, name, subresource = route['namespace'], route['name'], route['subresource']
            action = self._action(raw.method, name, raw.query.get('watch'))
        else:
            parts = [part for part in raw.path.split('/') if part]
            if parts[:1] == ['api'] and len(parts) == 2:
                resource = kmock.resource(group='', version=parts[1])
            elif parts[:1] == ['apis'] and len(parts) == 3:
                resource = kmock.resource(group=parts[1], version=parts[2])
            elif parts[:1] == ['apis'] and len(parts) == 2:
                resource = kmock.resource(group=parts[1])
        request = kmock.Request(
            id=len(self._requests), raw_request=raw, url=raw.url, method=raw.method,
            params=dict(raw.query), headers=raw.headers, body=body,
            text=body.decode('utf-8', 'replace'), data=data,
            action=action, resource=resource, namespace=namespace, name=name,
            subresource=subresource)
        self._requests.append(request)
        if len(self._requests) > 2 * REQUESTS_KEPT:  # keep kmock's request logs small
            del self._requests[:-REQUESTS_KEPT]
            for payload in self._payloads:
                del payload._requests[:-REQUESTS_KEPT]
        return request

    @staticmethod
    def _action(method: str, name: str | None, watch: str | None) -> kmock.action | None:
        if method == 'GET':
            if watch in ('true', '1'):
                return kmock.action.WATCH
            return kmock.action.FETCH if name else kmock.action.LIST
        return {'POST': kmock.action.CREATE, 'PUT': kmock.action.UPDATE,
                'PATCH': kmock.action.UPDATE, 'DELETE': kmock.action.DELETE}.get(method)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.resource.plural:
            return await self._serve_resource(request)
        path = request.url.path
        if path in ('/healthz', '/readyz', '/livez'):
            return aiohttp.web.Response(text='ok')
        if path.rstrip('/') == '/openapi/v3' or path.startswith('/openapi/v3/'):
            return self._serve_openapi(path)
        # Discovery: kmock's scaffold, fed by self.resources (not kmock's emulator CRUD).
        return await kmock.RawHandler._handle(self, request)

    # ------------------------------------------------------------ discovery (kmock, adjusted)

    def _get_resources(self) -> list[kmock.resource]:
        # Only what is declared: kmock would also add the resources of stored objects.
        return list(self.resources)

    async def _serve_server_version(self, request: kmock.Request) -> dict[str, Any]:
        return {'major': '1', 'minor': '32', 'gitVersion': 'v1.32.0-gremesh-stand-in',
                'gitCommit': '0' * 40, 'gitTreeState': 'clean', 'buildDate': '2025-01-01T00:00:00Z',
                'goVersion': 'go1.23', 'compiler': 'gc', 'platform': 'linux/amd64'}

    async def _serve_version(self, request: kmock.Request) -> dict[str, Any]:
        listing = await super()._serve_version(request)
        if not request.resource.group:  # kmock says "/v1", which kubectl cannot parse
            listing['groupVersion'] = request.resource.version
        for entry in listing['resources']:
            plural, _, subresource = entry['name'].partition('/')
            rtype = self._types.get((request.resource.group, request.resource.version, plural))
            if rtype is None:
                continue
            names = (rtype.crd or {}).get('spec', {}).get('names', {})
            if names.get('shortNames'):
                entry['shortNames'] = list(names['shortNames'])
            if names.get('categories'):
                entry['categories'] = list(names['categories'])
            entry['namespaced'] = rtype.namespaced
            entry['verbs'] = list(api_types.ALL_VERBS)
            if subresource:  # kmock copies the names onto subresources; kubectl then trips
                entry.update(verbs=['get', 'patch', 'update'], shortNames=[], categories=[],
                             singularName='')
        listing['resources'].sort(key=lambda entry: entry['name'])
        return listing

    def _serve_openapi(self, path: str) -> aiohttp.web.Response:
        by_gv: dict[str, list[ResourceType]] = collections.defaultdict(list)
        for rtype in self._types.values():
            key = f'apis/{rtype.group_version}' if rtype.group else f'api/{rtype.version}'
            by_gv[key].append(rtype)
        wanted = path[len('/openapi/v3'):].strip('/')
        if not wanted:
            paths = {}
            for key, types in sorted(by_gv.items()):
                digest = api_types.document_hash(api_types.openapi_document(types))
                paths[key] = {'serverRelativeURL': f'/openapi/v3/{key}?hash={digest}'}
            return _json({'paths': paths})
        if wanted not in by_gv:
            raise server_not_found()
        return _json(api_types.openapi_document(by_gv[wanted]))

    # ------------------------------------------------------------ types

    def _add_type(self, res: kmock.resource, rtype: ResourceType,
                  info: kmock.ResourceInfo | None = None) -> None:
        self._types[(rtype.group, rtype.version, rtype.plural)] = rtype
        self.resources[res] = info or api_types.resource_info(rtype)

    def _sync_crd_types(self, crd_name: str, crd: dict[str, Any] | None) -> None:
        """(Re-)register the types of a CRD after it was written; drop them once it is gone."""
        for key, rtype in list(self._types.items()):
            if rtype.crd is not None and rtype.crd['metadata']['name'] == crd_name:
                del self._types[key]
                del self.resources[kmock.resource(*key)]
        if crd is not None:
            for res, rtype in api_types.crd_types(crd):
                self._add_type(res, rtype)

    def _lookup(self, request: kmock.Request) -> ResourceType:
        res = request.resource
        rtype = self._types.get((res.group, res.version, res.plural))
        if rtype is None:
            raise server_not_found()
        if request.subresource not in (None, 'status') or (
                request.subresource == 'status' and not rtype.status_subresource):
            raise server_not_found()
        if request.namespace is not None and not rtype.namespaced:
            raise server_not_found()
        return rtype

    # ------------------------------------------------------------ storage

    def _key(self, rtype: ResourceType, namespace: str | None, name: str) -> tuple:
        return (rtype.storage, namespace if rtype.namespaced else None, name)

    def _stored(self, rtype: ResourceType, namespace: str | None, name: str
                ) -> dict[str, Any] | None:
        key = self._key(rtype, namespace, name)
        if key not in self._objects:
            return None
        obj = self._objects[key]
        return None if obj.deleted else obj.raw

    def _stored_all(self, storage: kmock.resource, namespace: str | None = None
                    ) -> list[dict[str, Any]]:
        return [obj.raw for (res, ns, _), obj in self._objects.items()
                if res == storage and not obj.deleted
                and (namespace is None or ns == namespace)]

    @staticmethod
    def _served(rtype: ResourceType, stored: dict[str, Any]) -> dict[str, Any]:
        """The stored object as the requested group/version shows it."""
        if rtype.plural == 'events' and rtype.group == '':
            return api_objects.event_to_core(stored)
        served = dict(stored)
        served['apiVersion'] = rtype.group_version
        served['kind'] = rtype.kind
        return served

    @staticmethod
    def _to_storage(rtype: ResourceType, served: dict[str, Any]) -> dict[str, Any]:
        if rtype.plural == 'events' and rtype.group == '':
            return api_objects.event_from_core(served)
        stored = dict(served)
        stored['apiVersion'] = f'{rtype.group}/{rtype.storage.version}' if rtype.group \
            else rtype.storage.version
        return stored

    def _commit(self, rtype: ResourceType, key: tuple, old: dict[str, Any] | None,
                new: dict[str, Any] | None, remove: bool = False) -> dict[str, Any]:
        """Store a change under a new resourceVersion and tell the watches.

        With `remove`, the object goes away and `new` (or else `old`) is its last state.
        No awaits here: every write is atomic with respect to reads and watch snapshots.
        """
        self._rv += 1
        if remove:
            assert old is not None
            final = copy.deepcopy(new if new is not None else old)
            final['metadata']['resourceVersion'] = str(self._rv)
            del self._objects[key]
            entry = LogEntry(self._rv, rtype.storage, 'DELETED', final, old)
            new = None
        else:
            new['metadata']['resourceVersion'] = str(self._rv)
            if old is None:
                self._objects[key] = new
            else:
                history = self._objects[key].history
                history.append(new)
                del history[:-HISTORY_KEPT]
            final = new
            entry = LogEntry(self._rv, rtype.storage, 'ADDED' if old is None else 'MODIFIED',
                             new, old)
        if len(self._log) >= self.watch_history:
            self._log_floor = self._log.popleft().rv
        self._log.append(entry)
        for watcher in list(self._watchers):
            events = self._watch_events(watcher, entry)
            if events:
                watcher.pending.extend(events)
                watcher.wakeup.set()
                if len(watcher.pending) > WATCH_BACKLOG:
                    watcher.overflowed = True
        self._after_commit(rtype, key, old, new, final)
        return final

    def _after_commit(self, rtype: ResourceType, key: tuple, old: dict[str, Any] | None,
                      new: dict[str, Any] | None, final: dict[str, Any]) -> None:
        if rtype.plural == 'customresourcedefinitions' and rtype.group == 'apiextensions.k8s.io':
            self._sync_crd_types(final['metadata']['name'], new)
        if rtype.storage == api_types.EVENTS_STORAGE and old is None and new is not None:
            self._event_keys.append(key)
            while len(self._event_keys) > self.max_events:
                self._expire_event(self._event_keys.popleft())
        if new is None:
            for applied_key in [k for k in self._applied if k[:3] == key]:
                del self._applied[applied_key]
            self._finish_pending_deletions(final)

    def _expire_event(self, key: tuple) -> None:
        if key in self._objects and not self._objects[key].deleted:
            events = self._types[('events.k8s.io', 'v1', 'events')]
            self._commit(events, key, self._objects[key].raw, None, remove=True)

    # ------------------------------------------------------------ resource requests

    async def _serve_resource(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        rtype = self._lookup(request)
        method, name = request.method, request.name
        if rtype.namespaced and name is not None and request.namespace is None:
            raise server_not_found()
        params = request.params
        if method == 'GET' and params.get('watch') in ('true', '1'):
            return await self._watch(request, rtype)
        if method == 'GET':
            return self._read(request, rtype)
        dry_run = bool(params.get('dryRun'))
        if method == 'POST' and name is None:
            body = self._body_object(request)
            return _json(*self._create(rtype, request.namespace, body, params, dry_run), )
        if method == 'PUT' and name is not None:
            body = self._body_object(request)
            return _json(*self._update(rtype, request, body, dry_run))
        if method == 'PATCH' and name is not None:
            return _json(*self._patch(rtype, request, dry_run))
        if method == 'DELETE' and name is not None:
            return _json(self._delete(rtype, request.namespace, name, request.data, dry_run))
        if method == 'DELETE':
            return _json(self._delete_collection(rtype, request, dry_run))
        raise ApiError(405, 'MethodNotAllowed',
                       'the server does not allow this method on the requested resource')

    @staticmethod
    def _body_object(request: kmock.Request) -> dict[str, Any]:
        if not isinstance(request.data, dict):
            raise bad_request('the body of the request must be a JSON or YAML object')
        return copy.deepcopy(request.data)

    # ------------------------------------------------------------ reads

    def _selector(self, rtype: ResourceType, request: kmock.Request
                  ) -> Callable[[dict[str, Any]], bool]:
        try:
            selects = api_selectors.make_filter(request.params.get('labelSelector'),
                                                request.params.get('fieldSelector'))
        except api_selectors.SelectorError as exc:
            raise bad_request(str(exc)) from exc
        namespace, name = request.namespace, request.name

        def matches(served: dict[str, Any]) -> bool:
            meta = served.get('metadata') or {}
            if namespace is not None and meta.get('namespace') != namespace:
                return False
            if name is not None and meta.get('name') != name:
                return False
            return selects(served)

        return matches

    def _columns(self, rtype: ResourceType) -> tuple[list, Callable]:
        if rtype.crd is not None:
            return api_tables.crd_columns(rtype.printer_columns)
        return api_tables.builtin_columns(rtype.plural)

    def _as_table(self, rtype: ResourceType, request: kmock.Request,
                  objects: list[dict[str, Any]]) -> dict[str, Any]:
        columns, row = self._columns(rtype)
        include = request.params.get('includeObject', 'Metadata')
        return api_tables.table(columns, row, objects, str(self._rv), include)

    def _read(self, request: kmock.Request, rtype: ResourceType) -> aiohttp.web.Response:
        wants = _accepts(request)
        if request.name is not None:
            stored = self._stored(rtype, request.namespace, request.name)
            if stored is None:
                raise not_found(rtype, request.name)
            served = self._served(rtype, stored)
            if wants == 'Table':
                return _json(self._as_table(rtype, request, [served]))
            if wants == 'PartialObjectMetadata':
                return _json(api_tables.partial_metadata(served))
            return _json(served)
        selects = self._selector(rtype, request)
        served_all = [self._served(rtype, s) for s in self._stored_all(rtype.storage,
                                                                          request.namespace)]
        items = sorted((s for s in served_all if selects(s)),
                       key=lambda s: (s['metadata'].get('namespace') or '', s['metadata']['name']))
        if wants == 'Table':
            return _json(self._as_table(rtype, request, items))
        if wants in ('PartialObjectMetadata', 'PartialObjectMetadataList'):
            return _json({'kind': 'PartialObjectMetadataList', 'apiVersion': 'meta.k8s.io/v1',
                          'metadata': {'resourceVersion': str(self._rv)},
                          'items': [api_tables.partial_metadata(s) for s in items]})
        return _json({'kind': f'{rtype.kind}List', 'apiVersion': rtype.group_version,
                      'metadata': {'resourceVersion': str(self._rv)}, 'items': items})

    # ------------------------------------------------------------ watches

    def _watch_events(self, watcher: Watcher, entry: LogEntry) -> list[tuple[str, dict]]:
        """What a committed change means to one watch, given its selection.

        As with the real server's watch cache, an object that starts or stops matching a
        selector arrives as ADDED or DELETED.
        """
        if entry.storage != watcher.rtype.storage:
            return []
        new = self._served(watcher.rtype, entry.obj)
        now_selected = watcher.selects(new)
        if entry.type != 'MODIFIED':
            return [(entry.type, new)] if now_selected else []
        was_selected = watcher.selects(self._served(watcher.rtype, entry.old))
        if now_selected and was_selected:
            return [('MODIFIED', new)]
        if now_selected:
            return [('ADDED', new)]
        if was_selected:
            return [('DELETED', new)]
        return []

    def _bookmark(self, rtype: ResourceType, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {'resourceVersion': str(self._rv)}
        if initial_end:
            meta['annotations'] = {'k8s.io/initial-events-end': 'true'}
        return {'type': 'BOOKMARK',
                'object': {'kind': rtype.kind, 'apiVersion': rtype.group_version,
                           'metadata': meta}}

    def _watch_start(self, rtype: ResourceType, request: kmock.Request, watcher: Watcher
                     ) -> tuple[list[dict[str, Any]], bool]:
        """The events a new watch begins with, and whether it may go on after them."""
        params = request.params
        since = params.get('resourceVersion') or '0'
        if params.get('sendInitialEvents') == 'true' or since == '0':
            events = [{'type': 'ADDED', 'object': served}
                      for served in sorted((self._served(rtype, s)
                                            for s in self._stored_all(rtype.storage)),
                                           key=lambda s: int(s['metadata']['resourceVersion']))
                      if watcher.selects(served)]
            if params.get('sendInitialEvents') == 'true':
                events.append(self._bookmark(rtype, initial_end=True))
            return events, True
        try:
            since_rv = int(since)
        except ValueError as exc:
            raise bad_request(f'invalid resource version: {since}') from exc
        if since_rv < self._log_floor:
            expired = ApiError(410, 'Expired',
                               f'too old resource version: {since_rv} ({self._log_floor})')
            return [{'type': 'ERROR', 'object': expired.status()}], False
        if since_rv > self._rv:  # e.g. a client that outlived a restart of this server
            expired = ApiError(410, 'Expired',
                               f'too large resource version: {since_rv}, current: {self._rv}')
            return [{'type': 'ERROR', 'object': expired.status()}], False
        events = []
        for entry in self._log:
            if entry.rv > since_rv:
                events.extend({'type': kind, 'object': obj}
                              for kind, obj in self._watch_events(watcher, entry))
        return events, True

    async def _watch(self, request: kmock.Request, rtype: ResourceType
                     ) -> aiohttp.web.StreamResponse:
        params = request.params
        try:
            timeout = float(params.get('timeoutSeconds') or 1800)
        except ValueError as exc:
            raise bad_request('invalid timeoutSeconds') from exc
        bookmarks = params.get('allowWatchBookmarks') in ('true', '1')
        wants = _accepts(request)
        as_table, as_metadata = wants == 'Table', wants.startswith('PartialObjectMetadata')
        watcher = Watcher(rtype, self._selector(rtype, request))

        # The snapshot and the registration happen without an await in between, so no
        # change can fall between what the watch starts with and what it is sent later.
        first, goes_on = self._watch_start(rtype, request, watcher)
        if goes_on:
            self._watchers.add(watcher)

        response = aiohttp.web.StreamResponse(
            status=200, headers={'Content-Type': 'application/json', 'Cache-Control': 'no-cache'})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)

        async def send(event: dict[str, Any]) -> None:
            if as_table and event['type'] in ('ADDED', 'MODIFIED', 'DELETED'):
                event = {'type': event['type'],
                         'object': self._as_table(rtype, request, [event['object']])}
            elif as_table and event['type'] == 'BOOKMARK':
                return
            elif as_metadata and event['type'] in ('ADDED', 'MODIFIED', 'DELETED'):
                event = {'type': event['type'],
                         'object': api_tables.partial_metadata(event['object'])}
            await response.write(json.dumps(event, separators=(',', ':')).encode() + b'\n')

        try:
            await response.prepare(request._raw_request)
            for event in first:
                await send(event)
            next_bookmark = loop.time() + BOOKMARK_EVERY
            while goes_on and not watcher.overflowed:
                moment = loop.time()
                if moment >= deadline:
                    if bookmarks:
                        await send(self._bookmark(rtype))
                    break
                if not watcher.pending:
                    watcher.wakeup.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(watcher.wakeup.wait(),
                                               min(deadline, next_bookmark) - moment)
                while watcher.pending:
                    kind, obj = watcher.pending.popleft()
                    await send({'type': kind, 'object': obj})
                if bookmarks and loop.time() >= next_bookmark:
                    await send(self._bookmark(rtype))
                    next_bookmark = loop.time() + BOOKMARK_EVERY
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        finally:
            self._watchers.discard(watcher)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    # ------------------------------------------------------------ writes

    def _check_namespace(self, rtype: ResourceType, namespace: str | None) -> None:
        if not rtype.namespaced:
            return
        namespaces = self._types[('', 'v1', 'namespaces')]
        if namespace is None:
            raise bad_request('the namespace of the object is required')
        ns = self._stored(namespaces, None, namespace)
        if ns is None:
            raise not_found(namespaces, namespace)
        if ns['metadata'].get('deletionTimestamp'):
            raise forbidden(rtype, '', f'unable to create new content in namespace {namespace} '
                                       'because it is being terminated')

    def _admit(self, rtype: ResourceType, old: dict[str, Any] | None, new: dict[str, Any],
               subresource: str | None, params: dict[str, str]) -> tuple[dict, list[str]]:
        """Turn what a client sent into what gets stored, or raise why it is refused.

        `old` and `new` are in the served form; the result too. `new` is copied first: a
        patch result shares parts with the stored version, which must never change.
        """
        new = copy.deepcopy(new)
        if not isinstance(new.get('metadata'), dict):
            new['metadata'] = {}
        meta = new['metadata']
        if old is None:
            meta['uid'] = str(uuid.uuid4())
            meta['creationTimestamp'] = now()
            for key in ('deletionTimestamp', 'deletionGracePeriodSeconds', 'resourceVersion'):
                meta.pop(key, None)
            if rtype.status_subresource and rtype.crd is not None:
                new.pop('status', None)
        else:
            if subresource == 'status':
                status = new.get('status')
                new = copy.deepcopy(old)
                new.pop('status', None)
                if status is not None:
                    new['status'] = status
                meta = new['metadata']
            elif rtype.status_subresource:
                new.pop('status', None)
                if 'status' in old:
                    new['status'] = copy.deepcopy(old['status'])
            for key in api_objects.SERVER_OWNED_META:
                if key in old['metadata']:
                    meta[key] = old['metadata'][key]
                else:
                    meta.pop(key, None)
        new['apiVersion'], new['kind'] = rtype.group_version, rtype.kind
        api_objects.drop_empty_metadata(meta)

        errors = api_objects.name_errors(rtype, meta['name']) if old is None else []
        warnings: list[str] = []
        if rtype.plural == 'secrets' and rtype.group == '':
            errors += api_objects.admit_secret(new)
        elif rtype.plural == 'namespaces' and rtype.group == '':
            api_objects.admit_namespace(new)
        elif rtype.plural == 'customresourcedefinitions':
            errors += api_types.crd_problems(new)
            if not errors:
                new['status'] = api_types.crd_status(new, now(),
                                                     bool(meta.get('deletionTimestamp')))
        if rtype.schema is not None:
            new, unknown, schema_errors = api_schema.process(new, rtype.schema)
            errors += schema_errors
            if unknown and params.get('fieldValidation') == 'Strict':
                raise bad_request(f'{rtype.kind} in version "{rtype.version}" cannot be '
                                  f'handled as a {rtype.kind}: strict decoding error: ' +
                                  ', '.join(f'unknown field "{path}"' for path in unknown))
            if params.get('fieldValidation') != 'Ignore':
                warnings += [f'unknown field "{path}"' for path in unknown]
        if errors:
            raise invalid(rtype, meta['name'], errors)

        if rtype.tracks_generation:
            if old is None:
                new['metadata']['generation'] = 1
            elif (api_objects.spec_part(old, rtype.status_subresource)
                  != api_objects.spec_part(new, rtype.status_subresource)):
                new['metadata']['generation'] = int(old['metadata'].get('generation', 1)) + 1
        return new, warnings

    def _write(self, rtype: ResourceType, old_stored: dict[str, Any] | None,
               new: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        """Store an admitted object (served form) unless nothing changed; return it served."""
        meta = new['metadata']
        key = self._key(rtype, meta.get('namespace'), meta['name'])
        stored = self._to_storage(rtype, new)
        if old_stored is not None:
            stored['metadata']['resourceVersion'] = old_stored['metadata'].get('resourceVersion')
            if stored == old_stored:
                return self._served(rtype, old_stored)  # a no-op write is not a change
        # Once the last finalizer is gone, the deletion completes.
        remove = bool(old_stored and meta.get('deletionTimestamp') and not meta.get('finalizers'))
        if dry_run:
            return self._served(rtype, stored)
        final = self._commit(rtype, key, old_stored, stored, remove=remove)
        return self._served(rtype, final)

    def _create(self, rtype: ResourceType, namespace: str | None, body: dict[str, Any],
                params: dict[str, str], dry_run: bool = False) -> tuple[dict, int, list[str]]:
        meta = body.get('metadata') if isinstance(body.get('metadata'), dict) else {}
        body['metadata'] = meta
        if rtype.namespaced:
            if namespace and meta.get('namespace') and meta['namespace'] != namespace:
                raise bad_request('the namespace of the provided object does not match the '
                                  'namespace sent on the request')
            namespace = namespace or meta.get('namespace')
            meta['namespace'] = namespace
        else:
            meta.pop('namespace', None)
        if not meta.get('name') and meta.get('generateName'):
            suffix = ''.join(random.choices(string.ascii_lowercase + string.digits, k=5))
            meta['name'] = meta['generateName'] + suffix
        if not meta.get('name'):
            raise invalid(rtype, '', [api_schema.FieldError(
                'metadata.name', 'Required', None, 'name or generateName is required')])
        self._check_api_version(rtype, body)
        self._check_namespace(rtype, namespace)
        if rtype.crd is not None and rtype.crd['metadata'].get('deletionTimestamp'):
            raise ApiError(405, 'MethodNotAllowed',
                           'create not allowed while custom resource definition is terminating')
        if self._stored(rtype, namespace, meta['name']) is not None:
            raise already_exists(rtype, meta['name'])
        new, warnings = self._admit(rtype, None, body, None, params)
        return self._write(rtype, None, new, dry_run), 201, warnings

    @staticmethod
    def _check_api_version(rtype: ResourceType, body: dict[str, Any]) -> None:
        sent = body.get('apiVersion')
        if sent and sent != rtype.group_version:
            raise bad_request(f'the API version in the data ({sent}) does not match the '
                              f'expected API version ({rtype.group_version})')
        if body.get('kind') and body['kind'] != rtype.kind:
            raise bad_request(f'the kind in the data ({body["kind"]}) does not match the '
                              f'expected kind ({rtype.kind})')

    def _current(self, rtype: ResourceType, request: kmock.Request) -> dict[str, Any]:
        stored = self._stored(rtype, request.namespace, request.name)
        if stored is None:
            raise not_found(rtype, request.name)
        return stored

    def _update(self, rtype: ResourceType, request: kmock.Request, body: dict[str, Any],
                dry_run: bool) -> tuple[dict, int, list[str]]:
        stored = self._current(rtype, request)
        old = self._served(rtype, stored)
        meta = body.get('metadata') if isinstance(body.get('metadata'), dict) else {}
        if meta.get('name') not in (None, request.name):
            raise bad_request(f'the name of the object ({meta.get("name")}) does not match the '
                              f'name on the URL ({request.name})')
        self._check_api_version(rtype, body)
        sent_rv = meta.get('resourceVersion')
        if sent_rv and sent_rv != stored['metadata']['resourceVersion']:
            raise conflict(rtype, request.name, STALE)
        if not sent_rv and rtype.crd is not None:
            raise invalid(rtype, request.name, [api_schema.FieldError(
                'metadata.resourceVersion', 'Invalid', 0, 'must be specified for an update')])
        new, warnings = self._admit(rtype, old, body, request.subresource, request.params)
        return self._write(rtype, stored, new, dry_run), 200, warnings

    def _patch(self, rtype: ResourceType, request: kmock.Request, dry_run: bool
               ) -> tuple[dict, int, list[str]]:
        content_type = str(request.headers.get('Content-Type') or '').split(';')[0].strip()
        if content_type not in api_patches.KNOWN:
            raise ApiError(415, 'UnsupportedMediaType',
                           f'the body of the request was in an unknown format - accepted media '
                           f'types include: {", ".join(api_patches.KNOWN)}')
        if content_type == api_patches.STRATEGIC and rtype.crd is not None:
            raise ApiError(415, 'UnsupportedMediaType',
                           'strategic merge patch is not supported for custom resources')
        applying = content_type == api_patches.APPLY
        manager = request.params.get('fieldManager') or ''
        if applying and not manager:
            raise bad_request('PATCH, application/apply-patch+yaml requires fieldManager to be '
                              'set')
        applied_key = (rtype.storage, request.namespace, request.name, manager,
                       request.subresource or '')
        stored = self._stored(rtype, request.namespace, request.name)
        if stored is None and applying and request.subresource is None:
            body = self._body_object(request)  # server-side apply creates what is missing
            body.setdefault('metadata', {})['name'] = request.name
            result = self._create(rtype, request.namespace, body, request.params, dry_run)
            if not dry_run:
                self._applied[applied_key] = copy.deepcopy(request.data)
            return result
        if stored is None:
            raise not_found(rtype, request.name)
        old = self._served(rtype, stored)
        base = old
        if applying:  # fields this manager applied before and applies no more are released
            base = api_patches.release_fields(old, self._applied.get(applied_key), request.data)
        try:
            patched = api_patches.apply_patch(base, request.data, content_type)
        except api_patches.PatchError as exc:
            raise ApiError(422, 'Invalid', str(exc)) from exc
        sent_rv = (patched.get('metadata') or {}).get('resourceVersion')
        if sent_rv and sent_rv != stored['metadata']['resourceVersion']:
            raise conflict(rtype, request.name, STALE)
        new, warnings = self._admit(rtype, old, patched, request.subresource, request.params)
        result = self._write(rtype, stored, new, dry_run)
        if applying and not dry_run:
            self._applied[applied_key] = copy.deepcopy(request.data)
        return result, 200, warnings

    # ------------------------------------------------------------ deletion

    def _delete(self, rtype: ResourceType, namespace: str | None, name: str,
                options: Any, dry_run: bool = False) -> dict[str, Any]:
        stored = self._stored(rtype, namespace, name)
        if stored is None:
            raise not_found(rtype, name)
        preconditions = options.get('preconditions') if isinstance(options, dict) else None
        preconditions = preconditions or {}
        if preconditions.get('uid') and preconditions['uid'] != stored['metadata']['uid']:
            raise conflict(rtype, name, 'Precondition failed: UID in precondition: '
                                        f'{preconditions["uid"]}, UID in object meta: '
                                        f'{stored["metadata"]["uid"]}')
        sent_rv = preconditions.get('resourceVersion')
        if sent_rv and sent_rv != stored['metadata']['resourceVersion']:
            raise conflict(rtype, name, STALE)
        if rtype.plural == 'namespaces' and rtype.group == '' and name in SEED_NAMESPACES[:3]:
            raise forbidden(rtype, name, 'this namespace may not be deleted')
        if dry_run:
            return self._served(rtype, stored)
        key = self._key(rtype, namespace, name)
        if stored['metadata'].get('deletionTimestamp'):
            return self._served(rtype, stored)
        waits = self._waits_for_contents(rtype, stored)
        if not stored['metadata'].get('finalizers') and not waits:
            return self._served(rtype, self._commit(rtype, key, stored, None, remove=True))

        # Graceful: mark it, then let finalizers (or the contents' removal) finish it.
        marked = copy.deepcopy(stored)
        marked['metadata']['deletionTimestamp'] = now()
        marked['metadata']['deletionGracePeriodSeconds'] = 0
        if rtype.plural == 'namespaces' and rtype.group == '':
            marked['status'] = {'phase': 'Terminating'}
        elif rtype.plural == 'customresourcedefinitions':
            marked['status'] = api_types.crd_status(marked, now(), terminating=True)
        result = self._commit(rtype, key, stored, marked)
        if waits:
            self._delete_contents(rtype, stored)
            self._finish_pending_deletions(stored)
        current = self._stored(rtype, namespace, name)
        return self._served(rtype, current or result)

    def _waits_for_contents(self, rtype: ResourceType, stored: dict[str, Any]) -> bool:
        """Namespaces and CRDs go only after what they contain (as with the real controllers)."""
        if rtype.group == '' and rtype.plural == 'namespaces':
            return True
        return rtype.plural == 'customresourcedefinitions' and rtype.group == 'apiextensions.k8s.io'

    def _contents(self, rtype: ResourceType, stored: dict[str, Any]
                  ) -> list[tuple[ResourceType, dict[str, Any]]]:
        if rtype.plural == 'namespaces':
            namespace = stored['metadata']['name']
            return [(self._type_of_storage(res), obj.raw)
                    for (res, ns, _), obj in list(self._objects.items())
                    if ns == namespace and not obj.deleted]
        crd_name = stored['metadata']['name']
        for candidate in self._types.values():
            if candidate.crd is not None and candidate.crd['metadata']['name'] == crd_name:
                return [(candidate, obj) for obj in self._stored_all(candidate.storage)]
        return []

    def _type_of_storage(self, storage: kmock.resource) -> ResourceType:
        return next(rtype for rtype in self._types.values() if rtype.storage == storage)

    def _delete_contents(self, rtype: ResourceType, stored: dict[str, Any]) -> None:
        for content_type, obj in self._contents(rtype, stored):
            meta = obj['metadata']
            with contextlib.suppress(ApiError):
                self._delete(content_type, meta.get('namespace'), meta['name'], None)

    def _finish_pending_deletions(self, removed: dict[str, Any]) -> None:
        """After a removal: finish a terminating namespace or CRD that is now empty."""
        namespaces = self._types[('', 'v1', 'namespaces')]
        crds = self._types[('apiextensions.k8s.io', 'v1', 'customresourcedefinitions')]
        candidates = []
        if removed.get('kind') == 'Namespace':
            candidates.append((namespaces, None, removed['metadata']['name']))
        elif removed['metadata'].get('namespace'):
            candidates.append((namespaces, None, removed['metadata']['namespace']))
        group = removed.get('apiVersion', '').rpartition('/')[0]
        for rtype in list(self._types.values()):
            if rtype.crd is not None and rtype.group == group and rtype.kind == removed.get('kind'):
                candidates.append((crds, None, rtype.crd['metadata']['name']))
                break
        if removed.get('kind') == 'CustomResourceDefinition':
            candidates.append((crds, None, removed['metadata']['name']))
        for owner_type, _, owner_name in candidates:
            owner = self._stored(owner_type, None, owner_name)
            if owner is None or not owner['metadata'].get('deletionTimestamp'):
                continue
            if not self._contents(owner_type, owner) and not owner['metadata'].get('finalizers'):
                self._commit(owner_type, self._key(owner_type, None, owner_name), owner, None,
                             remove=True)

    def _delete_collection(self, rtype: ResourceType, request: kmock.Request,
                           dry_run: bool) -> dict[str, Any]:
        selects = self._selector(rtype, request)
        served_all = [self._served(rtype, s) for s in self._stored_all(rtype.storage,
                                                                          request.namespace)]
        deleted = []
        for served in served_all:
            if selects(served):
                meta = served['metadata']
                with contextlib.suppress(ApiError):
                    deleted.append(self._delete(rtype, meta.get('namespace'), meta['name'],
                                                request.data, dry_run))
        return {'kind': f'{rtype.kind}List', 'apiVersion': rtype.group_version,
                'metadata': {'resourceVersion': str(self._rv)}, 'items': deleted}


# ---------------------------------------------------------------- command line

def write_kubeconfig(path: Path, url: str) -> None:
    config = {
        'apiVersion': 'v1', 'kind': 'Config', 'preferences': {},
        'clusters': [{'name': 'gremesh-test', 'cluster': {'server': url}}],
        'users': [{'name': 'gremesh-test', 'user': {'token': 'gremesh-test-token'}}],
        'contexts': [{'name': 'gremesh-test', 'context': {
            'cluster': 'gremesh-test', 'user': 'gremesh-test', 'namespace': 'default'}}],
        'current-context': 'gremesh-test',
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix('.tmp')
    temporary.write_text(yaml.safe_dump(config, sort_keys=False))
    temporary.replace(path)


async def serve(port: int, kubeconfig: Path | None, **options: Any) -> None:
    handler = ApiServer(**options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with handler, kmock.Server(handler, host='127.0.0.1', port=port) as server:
        url = f'http://127.0.0.1:{server.port}'
        if kubeconfig is not None:
            write_kubeconfig(kubeconfig, url)
        print(f'apiserver ready: {url} kubeconfig={kubeconfig or "-"} pid={os.getpid()}',
              flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--port', type=int, default=18443, help='0 picks a free port')
    parser.add_argument('--kubeconfig', type=Path, help='where to write a kubeconfig')
    parser.add_argument('--verbose', '-v', action='store_true', help='log every request')
    parser.add_argument('--watch-history', type=int, default=WATCH_LOG_SIZE,
                        help='changes kept for watches resuming from a resourceVersion; older '
                             'ones get 410 Gone')
    parser.add_argument('--max-events', type=int, default=MAX_EVENTS,
                        help='Event objects kept (the oldest are deleted)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format='%(asctime)s %(name)s %(message)s', stream=sys.stderr)
    logging.getLogger('aiohttp.access').setLevel(logging.WARNING)
    asyncio.run(serve(args.port, args.kubeconfig, verbose=args.verbose,
                      watch_history=max(args.watch_history, 1), max_events=args.max_events))


if __name__ == '__main__':
    main()
