"""`meta.k8s.io/v1` Table responses, which `kubectl get` asks for to print its columns.

Custom resources get their CRD's `additionalPrinterColumns`, evaluated with a JSONPath subset
(`.a.b`, `.a[0]`, `.a[*].b`, `.a[?(@.type=="Ready")].status`); `date` columns turn into ages
the way the real server does. A few built-in kinds get their usual columns; anything else
gets Name and Age.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any, Callable

Row = list[Any]
Column = dict[str, Any]

_STEP = re.compile(
    r"""\.(?P<name>[A-Za-z0-9_\-$]+)
      | \[(?P<index>-?\d+|\*)\]
      | \[['"](?P<quoted>[^'"]+)['"]\]
      | \[\?\(@(?P<fpath>(?:\.[A-Za-z0-9_\-]+)+)\s*(?P<fop>==|!=)\s*
           (?P<fval>"[^"]*"|'[^']*'|[^)\s]+)\s*\)\]
    """, re.VERBOSE)


def jsonpath(obj: Any, expression: str) -> list[Any]:
    """Evaluate a simple JSONPath (`{}` braces optional) and return all matches."""
    expression = expression.strip()
    if expression.startswith('{') and expression.endswith('}'):
        expression = expression[1:-1]
    if expression.startswith('$'):
        expression = expression[1:]
    current = [obj]
    position = 0
    while position < len(expression):
        match = _STEP.match(expression, position)
        if match is None:
            return []
        position = match.end()
        current = _step(current, match)
    return current


def _step(values: list[Any], match: re.Match[str]) -> list[Any]:
    result: list[Any] = []
    name = match.group('name') or match.group('quoted')
    for value in values:
        if name is not None:
            if isinstance(value, dict) and name in value:
                result.append(value[name])
        elif match.group('index') is not None:
            if not isinstance(value, list):
                continue
            index = match.group('index')
            if index == '*':
                result.extend(value)
            elif -len(value) <= int(index) < len(value):
                result.append(value[int(index)])
        elif isinstance(value, list):
            wanted = match.group('fval')
            if wanted[:1] in ('"', "'"):
                wanted = wanted[1:-1]
            for item in value:
                found = jsonpath(item, match.group('fpath'))
                text = _plain(found[0]) if found else None
                if (text == wanted) == (match.group('fop') == '=='):
                    result.append(item)
    return result


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def parse_time(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
    except (ValueError, AttributeError):
        return None


def human_age(text: str | None, now: datetime.datetime | None = None) -> str:
    """How long ago a timestamp was, shortened the way kubectl's AGE column shows it."""
    moment = parse_time(text or '')
    if moment is None:
        return '<unknown>'
    now = now or datetime.datetime.now(datetime.timezone.utc)
    seconds = int((now - moment).total_seconds())
    if seconds < -1:
        return '<invalid>'
    if seconds < 0:
        return '0s'
    if seconds < 120:
        return f'{seconds}s'
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400

    def pair(big: int, big_unit: str, small: int, small_unit: str) -> str:
        return f'{big}{big_unit}' if small == 0 else f'{big}{big_unit}{small}{small_unit}'

    if minutes < 10:
        return pair(minutes, 'm', seconds % 60, 's')
    if minutes < 180:
        return f'{minutes}m'
    if hours < 8:
        return pair(hours, 'h', minutes % 60, 'm')
    if hours < 48:
        return f'{hours}h'
    if hours < 24 * 8:
        return pair(days, 'd', hours % 24, 'h')
    if hours < 24 * 365 * 2:
        return f'{days}d'
    if hours < 24 * 365 * 8:
        return pair(days // 365, 'y', days % 365, 'd')
    return f'{days // 365}y'


def _cell(value: Any, column_type: str) -> Any:
    """One printer-column cell from the first JSONPath match, typed like the real server."""
    if value is None:
        return None
    if column_type == 'string':
        return _plain(value)
    if column_type == 'integer' and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if column_type == 'number' and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if column_type == 'boolean' and isinstance(value, bool):
        return value
    if column_type == 'date' and isinstance(value, str):
        return human_age(value) if parse_time(value) else '<invalid>'
    return None


NAME_COLUMN: Column = {'name': 'Name', 'type': 'string', 'format': 'name', 'priority': 0,
                       'description': 'Name must be unique within a namespace.'}
AGE_COLUMN: Column = {'name': 'Age', 'type': 'date', 'format': '', 'priority': 0,
                      'description': 'CreationTimestamp is the time the object was created.'}


def _age(obj: dict[str, Any]) -> str:
    return human_age((obj.get('metadata') or {}).get('creationTimestamp'))


def crd_columns(printer_columns: list[dict[str, Any]] | None) -> tuple[list[Column], Callable]:
    """Columns and a row builder for a custom resource version."""
    printer_columns = printer_columns if printer_columns is not None else [
        {'name': 'Age', 'type': 'date', 'jsonPath': '.metadata.creationTimestamp'}]
    columns = [NAME_COLUMN] + [
        {'name': pc['name'], 'type': pc.get('type', 'string'), 'format': pc.get('format', ''),
         'description': pc.get('description', ''), 'priority': pc.get('priority', 0)}
        for pc in printer_columns]

    def row(obj: dict[str, Any]) -> Row:
        cells: Row = [obj['metadata']['name']]
        for pc in printer_columns:
            found = jsonpath(obj, pc['jsonPath'])
            cells.append(_cell(found[0], pc.get('type', 'string')) if found else None)
        return cells

    return columns, row


def _col(name: str, kind: str = 'string', priority: int = 0) -> Column:
    return {'name': name, 'type': kind, 'format': '', 'description': '', 'priority': priority}


def _event_row(obj: dict[str, Any]) -> Row:
    regarding = obj.get('involvedObject') or obj.get('regarding') or {}
    seen = (obj.get('lastTimestamp') or (obj.get('series') or {}).get('lastObservedTime')
            or obj.get('eventTime') or obj.get('deprecatedLastTimestamp')
            or obj['metadata'].get('creationTimestamp'))
    target = f"{str(regarding.get('kind', '')).lower()}/{regarding.get('name', '')}"
    message = obj.get('message', obj.get('note', ''))
    return [human_age(seen), obj.get('type', ''), obj.get('reason', ''), target, message]


_BUILTIN: dict[str, tuple[list[Column], Callable[[dict[str, Any]], Row]]] = {
    'secrets': ([NAME_COLUMN, _col('Type'), _col('Data', 'integer'), AGE_COLUMN],
                lambda o: [o['metadata']['name'], o.get('type', ''), len(o.get('data') or {}),
                           _age(o)]),
    'configmaps': ([NAME_COLUMN, _col('Data', 'integer'), AGE_COLUMN],
                   lambda o: [o['metadata']['name'],
                              len(o.get('data') or {}) + len(o.get('binaryData') or {}),
                              _age(o)]),
    'namespaces': ([NAME_COLUMN, _col('Status'), AGE_COLUMN],
                   lambda o: [o['metadata']['name'], (o.get('status') or {}).get('phase', ''),
                              _age(o)]),
    'leases': ([NAME_COLUMN, _col('Holder'), AGE_COLUMN],
               lambda o: [o['metadata']['name'], (o.get('spec') or {}).get('holderIdentity', ''),
                          _age(o)]),
    'events': ([_col('Last Seen'), _col('Type'), _col('Reason'), _col('Object'),
                _col('Message')], _event_row),
    'customresourcedefinitions': (
        [NAME_COLUMN, _col('Created At', 'date')],
        lambda o: [o['metadata']['name'], o['metadata'].get('creationTimestamp')]),
}


def builtin_columns(plural: str) -> tuple[list[Column], Callable]:
    return _BUILTIN.get(plural, ([NAME_COLUMN, AGE_COLUMN],
                                 lambda o: [o['metadata']['name'], _age(o)]))


def partial_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return {'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/v1',
            'metadata': obj.get('metadata', {})}


def table(columns: list[Column], row: Callable, objects: list[dict[str, Any]],
          resource_version: str, include_object: str = 'Metadata') -> dict[str, Any]:
    """A Table of `objects`; `include_object` is `None`, `Metadata` or `Object`."""
    rows = []
    for obj in objects:
        entry: dict[str, Any] = {'cells': row(obj)}
        if include_object == 'Object':
            entry['object'] = obj
        elif include_object != 'None':
            entry['object'] = partial_metadata(obj)
        rows.append(entry)
    return {'kind': 'Table', 'apiVersion': 'meta.k8s.io/v1',
            'metadata': {'resourceVersion': resource_version},
            'columnDefinitions': columns, 'rows': rows}
