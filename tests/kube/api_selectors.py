"""Label and field selectors, as list and watch requests carry them in their query strings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


class SelectorError(ValueError):
    """A selector that cannot be parsed; the server answers 400 BadRequest."""


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses (`a in (x,y),b=c`)."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == '(':
            depth += 1
        elif char == ')':
            depth -= 1
        if char == ',' and depth == 0:
            parts.append(''.join(current))
            current = []
        else:
            current.append(char)
    parts.append(''.join(current))
    return [part.strip() for part in parts if part.strip()]


@dataclass(frozen=True)
class LabelRequirement:
    key: str
    op: str  # '=', '!=', 'in', 'notin', 'exists', '!exists', '<', '>'
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == 'exists':
            return present
        if self.op == '!exists':
            return not present
        if self.op in ('=', 'in'):
            return present and value in self.values
        if self.op in ('!=', 'notin'):
            return not present or value not in self.values
        try:
            number, bound = int(value or ''), int(self.values[0])
        except ValueError:
            return False
        return number < bound if self.op == '<' else number > bound


def parse_label_selector(text: str | None) -> list[LabelRequirement]:
    """Parse `a=b,c!=d,e in (f,g),!h,i` into requirements (all must hold)."""
    requirements: list[LabelRequirement] = []
    for part in _split_top_level(text or ''):
        words = part.split()
        if len(words) >= 2 and words[1] in ('in', 'notin'):
            rest = part[len(words[0]):].strip()[len(words[1]):].strip()
            if not (rest.startswith('(') and rest.endswith(')')):
                raise SelectorError(f'unable to parse requirement: {part!r}')
            values = tuple(v.strip() for v in rest[1:-1].split(',') if v.strip())
            requirements.append(LabelRequirement(words[0], words[1], values))
        elif part.startswith('!'):
            requirements.append(LabelRequirement(part[1:].strip(), '!exists'))
        else:
            for op in ('!=', '==', '=', '<', '>'):
                if op in part:
                    key, value = part.split(op, 1)
                    requirements.append(LabelRequirement(
                        key.strip(), '=' if op == '==' else op, (value.strip(),)))
                    break
            else:
                requirements.append(LabelRequirement(part, 'exists'))
    return requirements


def field_value(obj: dict[str, Any], path: str) -> str:
    """The string form of a dotted field of an object; missing fields read as ''."""
    value: Any = obj
    for step in path.split('.'):
        value = value.get(step) if isinstance(value, dict) else None
    if value is None:
        return ''
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def parse_field_selector(text: str | None) -> list[tuple[str, bool, str]]:
    """Parse `metadata.name=x,involvedObject.kind!=Pod` into (path, equal, value) triples."""
    terms: list[tuple[str, bool, str]] = []
    for part in _split_top_level(text or ''):
        for op, equal in (('!=', False), ('==', True), ('=', True)):
            if op in part:
                path, value = part.split(op, 1)
                terms.append((path.strip(), equal, value.strip().replace('\\', '')))
                break
        else:
            raise SelectorError(f'invalid selector: {part!r}; can\'t understand {part!r}')
    return terms


def make_filter(label_selector: str | None, field_selector: str | None
                ) -> Callable[[dict[str, Any]], bool]:
    """One predicate over objects (in the served version's shape) for both selectors."""
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector)

    def matches(obj: dict[str, Any]) -> bool:
        obj_labels = (obj.get('metadata') or {}).get('labels') or {}
        if not all(req.matches(obj_labels) for req in labels):
            return False
        return all((field_value(obj, path) == value) == equal for path, equal, value in fields)

    return matches
