"""Property tests of names: instance names (DNS labels), resource names, DNS subdomains."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from dfe.schemas import ClusterCreate, DnsName, ResourceName
from dfe.services.names import MAX_LENGTH, MIN_LENGTH, RESERVED_NAMES, instance_name_problem

LOWER = string.ascii_lowercase
ALNUM = LOWER + string.digits
LENGTH = f"must be {MIN_LENGTH} to {MAX_LENGTH} characters long"
LOWER_CASE = "must be lower case"
START = "must start with a letter (a-z)"
CHARSET = "may contain only letters a-z, digits and hyphens"
END_HYPHEN = "must not end with a hyphen"
DOUBLE_HYPHEN = "must not contain two hyphens in a row"

# What a valid instance name is, written independently of the code under test.
INSTANCE_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
RESOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

resource_names = TypeAdapter(ResourceName)
dns_names = TypeAdapter(DnsName)


@st.composite
def instance_names(draw: st.DrawFn) -> str:
    """Valid instance names: a letter, then alphanumeric runs joined by single hyphens."""
    name = draw(st.sampled_from(LOWER))
    for part in draw(st.lists(st.text(ALNUM, min_size=1, max_size=12), max_size=8)):
        name += draw(st.sampled_from(["", "-"])) + part
    name = name[:MAX_LENGTH].rstrip("-")
    if len(name) < MIN_LENGTH:
        name += "abc"[: MIN_LENGTH - len(name)]
    if name in RESERVED_NAMES:
        name += "x"
    return name


@st.composite
def dns_labels(draw: st.DrawFn, max_size: int = 63) -> str:
    size = draw(st.integers(1, max_size))
    if size == 1:
        return draw(st.sampled_from(ALNUM))
    middle = draw(st.text(ALNUM + "-", min_size=size - 2, max_size=size - 2))
    return draw(st.sampled_from(ALNUM)) + middle + draw(st.sampled_from(ALNUM))


dns_names_valid = (
    st.lists(dns_labels(), min_size=1, max_size=6)
    .map(".".join)
    .filter(lambda name: len(name) <= 253)
)


def random_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))


# Instance names


@given(instance_names())
@example("abc")
@example("a" * 63)
@example("a1-b2-c3")
def test_valid_instance_names_are_accepted(name):
    assert instance_name_problem(name) is None
    assert INSTANCE_NAME.fullmatch(name)
    assert DNS_LABEL.fullmatch(name)  # usable as the first label of the public host
    assert dns_names.validate_python(f"{name}.apps.example.com") == f"{name}.apps.example.com"


@given(st.text(LOWER, max_size=MIN_LENGTH - 1) | st.text(LOWER, min_size=MAX_LENGTH + 1))
def test_length_rule(name):
    assert instance_name_problem(name) == LENGTH


@given(instance_names(), st.data())
def test_upper_case_rule(name, data):
    letters = [i for i, c in enumerate(name) if c.isalpha()]
    index = data.draw(st.sampled_from(letters))
    shouted = name[:index] + name[index].upper() + name[index + 1 :]
    assert instance_name_problem(shouted) == LOWER_CASE


@given(instance_names(), st.sampled_from(string.digits + "-"))
def test_must_start_with_a_letter(name, first):
    candidate = (first + name)[:MAX_LENGTH]
    assert instance_name_problem(candidate) == START


@given(
    instance_names(),
    st.sampled_from(sorted(set(string.punctuation + " \t") - {"-"})),
    st.data(),
)
def test_only_letters_digits_and_hyphens(name, bad, data):
    index = data.draw(st.integers(1, len(name)))
    candidate = (name[:index] + bad + name[index:])[:MAX_LENGTH]
    if bad not in candidate:  # cut off by the length limit: put it last instead
        candidate = candidate[:-1] + bad
    assert instance_name_problem(candidate) == CHARSET


@given(instance_names(), st.sampled_from(["é", "ß", "ø", "ж", "ğ"]), st.data())
def test_non_ascii_letters_inside_a_name_are_named_as_the_problem(name, letter, data):
    """'café' starts with a letter a-z; the problem is the 'é', and the message says so."""
    index = data.draw(st.integers(1, len(name) - 1))
    candidate = name[:index] + letter + name[index + 1 :]
    assert instance_name_problem(candidate) == CHARSET


@given(instance_names())
@example("abc")
def test_a_trailing_newline_is_not_part_of_a_valid_name(name):
    candidate = name[: MAX_LENGTH - 1] + "\n"
    assert instance_name_problem(candidate) is not None


@given(instance_names())
def test_must_not_end_with_a_hyphen(name):
    assert instance_name_problem(name[: MAX_LENGTH - 1] + "-") == END_HYPHEN


@given(instance_names(), st.data())
def test_must_not_contain_two_hyphens_in_a_row(name, data):
    name = name[: MAX_LENGTH - 3]
    index = data.draw(st.integers(1, len(name) - 1))
    candidate = name[:index] + "--" + name[index:]
    if candidate.endswith("-"):
        candidate += "z"
    assert instance_name_problem(candidate) == DOUBLE_HYPHEN


@pytest.mark.parametrize("name", sorted(n for n in RESERVED_NAMES if len(n) >= MIN_LENGTH))
def test_reserved_names_are_refused(name):
    assert instance_name_problem(name) == f"'{name}' is reserved"


@given(instance_names())
def test_a_caller_may_reserve_other_names(name):
    assert instance_name_problem(name, reserved=frozenset({name})) == f"'{name}' is reserved"
    assert instance_name_problem("www", reserved=frozenset()) is None


@given(st.text(st.characters(exclude_characters="\n"), max_size=70))
def test_instance_names_match_the_dns_label_definition(name):
    valid = (
        MIN_LENGTH <= len(name) <= MAX_LENGTH
        and INSTANCE_NAME.fullmatch(name) is not None
        and name not in RESERVED_NAMES
    )
    problem = instance_name_problem(name)
    assert (problem is None) == valid, (name, problem)
    if problem is not None:
        assert isinstance(problem, str) and problem


# Resource names (mounts, servers, clusters)


@given(st.from_regex(RESOURCE_NAME, fullmatch=True), st.data())
def test_valid_resource_names_are_accepted_in_lower_case(name, data):
    given_as = data.draw(st.sampled_from(["", " ", "\t"])) + random_case(data.draw, name)
    given_as += data.draw(st.sampled_from(["", " ", "\n"]))
    assert resource_names.validate_python(given_as) == name
    assert ClusterCreate(name=given_as, subdomain="a.example").name == name


@given(st.text(max_size=70))
@example("")
@example("-abc")
@example(".abc")
@example("_abc")
@example("a" * 65)
@example("a b")
@example("a/b")
def test_resource_names_accepted_exactly_when_well_formed(text):
    expected = text.strip().lower()
    if RESOURCE_NAME.fullmatch(expected):
        assert resource_names.validate_python(text) == expected
    else:
        with pytest.raises(ValidationError) as refused:
            resource_names.validate_python(text)
        assert "must be 1-64 characters" in str(refused.value)


# DNS subdomains (clusters)


@given(dns_names_valid, st.data())
def test_valid_dns_names_are_accepted_lower_case_without_a_final_dot(name, data):
    given_as = random_case(data.draw, name) + data.draw(st.sampled_from(["", "."]))
    assert dns_names.validate_python(given_as) == name
    assert ClusterCreate(name="c", subdomain=given_as).subdomain == name


@given(dns_names_valid, st.data())
def test_dns_names_with_a_bad_label_are_rejected(name, data):
    labels = name.split(".")
    index = data.draw(st.integers(0, len(labels) - 1))
    label = labels[index]
    bad = data.draw(
        st.sampled_from(
            [
                "",  # an empty label: 'a..b'
                "-" + label,
                label + "-",
                label + "_x",
                label + " x",
                label[:1] + "é" + label[1:],
                (label * 64)[:64],  # 64 characters
            ]
        )
    )
    if index == len(labels) - 1 and bad == "" and len(labels) > 1:
        bad = "-"  # an empty last label is a trailing dot, which is allowed
    labels[index] = bad
    with pytest.raises(ValidationError) as refused:
        dns_names.validate_python(".".join(labels))
    assert "DNS name" in str(refused.value)


@given(st.lists(dns_labels(max_size=10), min_size=26, max_size=40))
def test_dns_names_longer_than_253_characters_are_rejected(labels):
    name = ".".join(labels)
    if len(name) <= 253:
        name = ".".join([*labels, "a" * 63, "b" * 63, "c" * 63, "d" * 63])
    with pytest.raises(ValidationError):
        dns_names.validate_python(name)


@given(dns_names_valid.filter(lambda name: "." in name))
@example("apps.example.com")
def test_a_newline_inside_a_dns_name_is_rejected(name):
    first, rest = name.split(".", 1)
    with pytest.raises(ValidationError):
        dns_names.validate_python(f"{first}\n.{rest}")
