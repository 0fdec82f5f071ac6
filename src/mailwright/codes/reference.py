"""The reply-code reference: ``reference.json`` loaded into frozen values.

The texts live in a data file rather than in Python so that translators and
reviewers can edit them without touching code, and so the same file can be
checked by a test that walks every entry.  Loading validates the whole file
once; after that every lookup is a dictionary access.

Enhanced codes are stored class-agnostically (``X.7.0``) because RFC 3463
defines subject and detail independently of the class digit: 4.7.0 and 5.7.0
share one entry, with per-class notes where their meaning differs.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any, Final

from mailwright.codes.errors import ReferenceDataError
from mailwright.codes.language import LANGUAGES

RESOURCE_NAME: Final[str] = "reference.json"
CLASS_KEYS: Final[tuple[str, ...]] = ("2xx", "3xx", "4xx", "5xx")
ENHANCED_CLASS_KEYS: Final[tuple[str, ...]] = ("2xx", "4xx", "5xx")
TEXT_FIELDS: Final[tuple[str, ...]] = ("summary", "description", "when", "fix", "action")


def class_key_of(code: int) -> str:
    """``"5xx"`` for 550: the key of the classes table for a basic reply code."""
    return f"{code // 100}xx"


@dataclass(frozen=True, slots=True)
class Texts:
    """One entry's explanation in one language, written for a person debugging mail.

    ``summary`` and ``action`` are one short sentence each, for one-line
    explanations and comparisons; the other fields are the full answer.
    ``by_class`` holds notes for enhanced codes whose meaning shifts with the
    class digit (keys ``2xx``, ``4xx``, ``5xx``).
    """

    summary: str
    description: str
    when: str
    fix: str
    action: str
    by_class: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ClassInfo:
    """What the first digit means (RFC 5321 4.2.1), in one language."""

    key: str
    name: str
    meaning: str
    retry: str
    enhanced_name: str | None


@dataclass(frozen=True, slots=True)
class SubjectInfo:
    """What the middle number of an enhanced code means (RFC 3463 2), in one language."""

    key: str
    name: str
    meaning: str


@dataclass(frozen=True, slots=True)
class BasicEntry:
    """A three-digit reply code of RFC 5321 or one of its extensions."""

    code: int
    class_key: str
    text: str
    rfc: str
    texts: Mapping[str, Texts]


@dataclass(frozen=True, slots=True)
class EnhancedEntry:
    """An RFC 3463 / IANA enhanced status code, keyed without its class (``X.1.1``)."""

    key: str
    subject: int
    detail: int
    classes: tuple[str, ...]
    text: str
    rfc: str
    texts: Mapping[str, Texts]

    def with_class(self, class_digit: int) -> str:
        """The concrete code for one class: ``5.1.1`` for class 5."""
        return f"{class_digit}.{self.subject}.{self.detail}"


class Reference:
    """The loaded reference; immutable, so one instance can be shared freely."""

    def __init__(
        self,
        *,
        basic: Mapping[int, BasicEntry],
        enhanced: Mapping[tuple[int, int], EnhancedEntry],
        classes: Mapping[str, Mapping[str, ClassInfo]],
        subjects: Mapping[int, Mapping[str, SubjectInfo]],
    ) -> None:
        self._basic = MappingProxyType(dict(basic))
        self._enhanced = MappingProxyType(dict(enhanced))
        self._classes = MappingProxyType(dict(classes))
        self._subjects = MappingProxyType(dict(subjects))

    @classmethod
    def from_package(cls) -> Reference:
        """Read ``reference.json`` shipped inside the package (works from a wheel or a zip)."""
        resource = resources.files("mailwright.codes").joinpath(RESOURCE_NAME)
        try:
            raw = resource.read_text(encoding="utf-8")
        except OSError as exc:
            raise ReferenceDataError(f"cannot read {RESOURCE_NAME}: {exc}") from exc
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ReferenceDataError(f"{RESOURCE_NAME} is not valid JSON: {exc}") from exc
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Reference:
        """Build and validate a reference from the decoded JSON document.

        Every field of every entry must be a non-empty string in every
        language; the first problem found is reported with its path.
        """
        return _Loader(data).load()

    @property
    def basic_codes(self) -> tuple[int, ...]:
        return tuple(sorted(self._basic))

    @property
    def enhanced_keys(self) -> tuple[str, ...]:
        return tuple(self._enhanced[k].key for k in sorted(self._enhanced))

    def basic(self, code: int) -> BasicEntry | None:
        return self._basic.get(code)

    def enhanced(self, subject: int, detail: int) -> EnhancedEntry | None:
        return self._enhanced.get((subject, detail))

    def class_info(self, key: str, lang: str) -> ClassInfo:
        return self._classes[key][lang]

    def subject_info(self, subject: int, lang: str) -> SubjectInfo | None:
        by_lang = self._subjects.get(subject)
        return None if by_lang is None else by_lang[lang]


@functools.cache
def default_reference() -> Reference:
    """The reference shipped with mailwright, read on first use and then shared.

    Reading is lazy (nothing happens at import) and the result is immutable,
    so caching it is safe and spares every explained reply a JSON parse.
    """
    return Reference.from_package()


class _Loader:
    """Turns the JSON document into values, naming the exact path of any defect."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def load(self) -> Reference:
        return Reference(
            basic=self._basic_entries(),
            enhanced=self._enhanced_entries(),
            classes=self._classes(),
            subjects=self._subjects(),
        )

    def _fail(self, path: str, problem: str) -> ReferenceDataError:
        return ReferenceDataError(f"{RESOURCE_NAME}: {path}: {problem}")

    def _table(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self._fail(path, "expected an object")
        return value

    def _string(self, table: Mapping[str, Any], key: str, path: str) -> str:
        value = table.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self._fail(f"{path}.{key}", "missing or empty text")
        return value

    def _texts(
        self, entry: Mapping[str, Any], path: str, classes: tuple[str, ...]
    ) -> Mapping[str, Texts]:
        out: dict[str, Texts] = {}
        for lang in LANGUAGES:
            table = self._table(entry.get(lang), f"{path}.{lang}")
            fields = {name: self._string(table, name, f"{path}.{lang}") for name in TEXT_FIELDS}
            notes_raw = self._table(table.get("by_class", {}), f"{path}.{lang}.by_class")
            notes: dict[str, str] = {}
            for class_key in notes_raw:
                if class_key not in classes:
                    raise self._fail(f"{path}.{lang}.by_class", f"unknown class {class_key!r}")
                notes[class_key] = self._string(notes_raw, class_key, f"{path}.{lang}.by_class")
            out[lang] = Texts(by_class=MappingProxyType(notes), **fields)
        return MappingProxyType(out)

    def _basic_entries(self) -> dict[int, BasicEntry]:
        out: dict[int, BasicEntry] = {}
        for key, raw in self._table(self._data.get("basic"), "basic").items():
            path = f"basic.{key}"
            entry = self._table(raw, path)
            if not (key.isdigit() and len(key) == 3 and 200 <= int(key) <= 599):
                raise self._fail(path, "key is not a reply code")
            if entry.get("code") != key:
                raise self._fail(path, "code field does not match its key")
            code = int(key)
            class_key = self._string(entry, "class", path)
            if class_key != class_key_of(code):
                raise self._fail(path, f"class {class_key!r} does not match the code")
            out[code] = BasicEntry(
                code=code,
                class_key=class_key,
                text=self._string(entry, "text", path),
                rfc=self._string(entry, "rfc", path),
                texts=self._texts(entry, path, ()),
            )
        return out

    def _enhanced_entries(self) -> dict[tuple[int, int], EnhancedEntry]:
        out: dict[tuple[int, int], EnhancedEntry] = {}
        for key, raw in self._table(self._data.get("enhanced"), "enhanced").items():
            path = f"enhanced.{key}"
            entry = self._table(raw, path)
            parts = key.split(".")
            if len(parts) != 3 or parts[0] != "X" or not all(p.isdigit() for p in parts[1:]):
                raise self._fail(path, "key is not of the form X.subject.detail")
            if entry.get("code") != key:
                raise self._fail(path, "code field does not match its key")
            classes = entry.get("classes")
            if (
                not isinstance(classes, list)
                or not classes
                or any(c not in ENHANCED_CLASS_KEYS for c in classes)
            ):
                raise self._fail(f"{path}.classes", "expected a non-empty list of 2xx/4xx/5xx")
            subject, detail = int(parts[1]), int(parts[2])
            out[(subject, detail)] = EnhancedEntry(
                key=key,
                subject=subject,
                detail=detail,
                classes=tuple(classes),
                text=self._string(entry, "text", path),
                rfc=self._string(entry, "rfc", path),
                texts=self._texts(entry, path, ENHANCED_CLASS_KEYS),
            )
        return out

    def _classes(self) -> dict[str, Mapping[str, ClassInfo]]:
        table = self._table(self._data.get("classes"), "classes")
        out: dict[str, Mapping[str, ClassInfo]] = {}
        for key in CLASS_KEYS:
            entry = self._table(table.get(key), f"classes.{key}")
            by_lang: dict[str, ClassInfo] = {}
            for lang in LANGUAGES:
                path = f"classes.{key}.{lang}"
                texts = self._table(entry.get(lang), path)
                enhanced_name = (
                    self._string(texts, "enhanced_name", path)
                    if key in ENHANCED_CLASS_KEYS
                    else None
                )
                by_lang[lang] = ClassInfo(
                    key=key,
                    name=self._string(texts, "name", path),
                    meaning=self._string(texts, "meaning", path),
                    retry=self._string(texts, "retry", path),
                    enhanced_name=enhanced_name,
                )
            out[key] = MappingProxyType(by_lang)
        return out

    def _subjects(self) -> dict[int, Mapping[str, SubjectInfo]]:
        table = self._table(self._data.get("subjects"), "subjects")
        out: dict[int, Mapping[str, SubjectInfo]] = {}
        for key, raw in table.items():
            path = f"subjects.{key}"
            entry = self._table(raw, path)
            if not (key.startswith("X.") and key[2:].isdigit()):
                raise self._fail(path, "key is not of the form X.subject")
            by_lang: dict[str, SubjectInfo] = {}
            for lang in LANGUAGES:
                texts = self._table(entry.get(lang), f"{path}.{lang}")
                by_lang[lang] = SubjectInfo(
                    key=key,
                    name=self._string(texts, "name", f"{path}.{lang}"),
                    meaning=self._string(texts, "meaning", f"{path}.{lang}"),
                )
            out[int(key[2:])] = MappingProxyType(by_lang)
        return out
