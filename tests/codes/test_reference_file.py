"""Walk the whole shipped reference file: every code the issue lists, both languages, no gaps."""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from typing import Any

import pytest

from mailwright.codes import Reference, ReferenceDataError, default_reference

REQUIRED_BASIC = [
    "211",
    "214",
    "220",
    "221",
    "235",
    "250",
    "251",
    "252",
    "334",
    "354",
    "421",
    "450",
    "451",
    "452",
    "454",
    "455",
    "500",
    "501",
    "502",
    "503",
    "504",
    "521",
    "530",
    "534",
    "535",
    "538",
    "550",
    "551",
    "552",
    "553",
    "554",
    "555",
    "556",
]

# RFC 3463 plus the later IANA registrations through X.7.27, as the issue asks.
REQUIRED_ENHANCED = (
    ["X.0.0"]
    + [f"X.1.{d}" for d in range(11)]
    + [f"X.2.{d}" for d in range(5)]
    + [f"X.3.{d}" for d in range(6)]
    + [f"X.4.{d}" for d in range(8)]
    + [f"X.5.{d}" for d in range(7)]
    + [f"X.6.{d}" for d in range(11)]
    + [f"X.7.{d}" for d in range(28)]
)

TEXT_FIELDS = ("summary", "description", "when", "fix", "action")
CJK = re.compile(r"[\u4e00-\u9fff]")


def load_raw() -> dict[str, Any]:
    text = resources.files("mailwright.codes").joinpath("reference.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def all_entries(raw: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"basic.{k}", v) for k, v in raw["basic"].items()] + [
        (f"enhanced.{k}", v) for k, v in raw["enhanced"].items()
    ]


def test_every_basic_code_of_the_issue_is_in_the_file() -> None:
    raw = load_raw()
    missing = [code for code in REQUIRED_BASIC if code not in raw["basic"]]
    assert missing == []


def test_every_registry_enhanced_code_is_in_the_file() -> None:
    raw = load_raw()
    missing = [key for key in REQUIRED_ENHANCED if key not in raw["enhanced"]]
    assert missing == []


def test_every_entry_has_every_field_in_both_languages() -> None:
    problems = []
    for path, entry in all_entries(load_raw()):
        for field in ("code", "text", "rfc"):
            if not str(entry.get(field, "")).strip():
                problems.append(f"{path}.{field}")
        for lang in ("en", "zh"):
            for field in TEXT_FIELDS:
                if not str(entry.get(lang, {}).get(field, "")).strip():
                    problems.append(f"{path}.{lang}.{field}")
    assert problems == []


def test_every_entry_says_which_rfc_defines_it() -> None:
    for path, entry in all_entries(load_raw()):
        assert re.match(r"(RFC \d{3,4}|draft-)", entry["rfc"]), path


def test_chinese_texts_are_chinese() -> None:
    for path, entry in all_entries(load_raw()):
        for field in TEXT_FIELDS:
            assert CJK.search(entry["zh"][field]), f"{path}.zh.{field}"


def test_basic_entries_name_their_class_by_first_digit() -> None:
    for code, entry in load_raw()["basic"].items():
        assert entry["code"] == code
        assert entry["class"] == f"{code[0]}xx"


def test_enhanced_entries_list_valid_classes_and_notes() -> None:
    for key, entry in load_raw()["enhanced"].items():
        assert entry["code"] == key
        assert entry["classes"], key
        assert set(entry["classes"]) <= {"2xx", "4xx", "5xx"}, key
        en_notes = entry["en"].get("by_class", {})
        zh_notes = entry["zh"].get("by_class", {})
        assert set(en_notes) == set(zh_notes), key
        assert set(en_notes) <= {"2xx", "4xx", "5xx"}, key
        assert all(note.strip() for note in [*en_notes.values(), *zh_notes.values()]), key


def test_class_and_subject_tables_are_complete() -> None:
    raw = load_raw()
    for key in ("2xx", "3xx", "4xx", "5xx"):
        for lang in ("en", "zh"):
            for field in ("name", "meaning", "retry"):
                assert raw["classes"][key][lang][field].strip(), (key, lang, field)
    assert raw["classes"]["5xx"]["en"]["name"].startswith("Permanent Negative")
    assert raw["classes"]["4xx"]["en"]["name"].startswith("Transient Negative")
    for subject in range(8):
        for lang in ("en", "zh"):
            for field in ("name", "meaning"):
                assert raw["subjects"][f"X.{subject}"][lang][field].strip()


def test_descriptions_are_written_per_entry_not_repeated() -> None:
    for lang in ("en", "zh"):
        for field in ("description", "when", "fix"):
            seen: dict[str, str] = {}
            for path, entry in all_entries(load_raw()):
                text = entry[lang][field]
                assert text not in seen, f"{path}.{lang}.{field} repeats {seen.get(text)}"
                seen[text] = path


def test_loader_reads_the_same_codes_as_the_file() -> None:
    raw = load_raw()
    reference = default_reference()
    assert [str(c) for c in reference.basic_codes] == sorted(raw["basic"], key=int)
    assert set(reference.enhanced_keys) == set(raw["enhanced"])


def test_loader_rejects_an_empty_field_and_names_it() -> None:
    raw = copy.deepcopy(load_raw())
    raw["basic"]["503"]["zh"]["fix"] = "  "
    with pytest.raises(ReferenceDataError, match=r"basic\.503\.zh\.fix"):
        Reference.from_mapping(raw)


def test_loader_rejects_a_class_that_contradicts_the_code() -> None:
    raw = copy.deepcopy(load_raw())
    raw["basic"]["250"]["class"] = "5xx"
    with pytest.raises(ReferenceDataError, match=r"basic\.250"):
        Reference.from_mapping(raw)


def test_loader_rejects_a_note_for_an_unknown_class() -> None:
    raw = copy.deepcopy(load_raw())
    raw["enhanced"]["X.1.1"]["en"]["by_class"]["3xx"] = "no such thing"
    with pytest.raises(ReferenceDataError, match=r"X\.1\.1\.en\.by_class"):
        Reference.from_mapping(raw)
