"""device-detector's handset answer, without walking its whole brand list per agent.

device-detector finds a handset's brand by trying the brand expressions of its mobiles file one after another until
one matches (a first match wins), then the brand's model expressions, and the OS's, the same way. An agent of a brand
far down the list costs about a thousand searches, and each expression is compiled (by `regex`, in Python) the first
time it is tried: reading its first thousand agents, a process spends about 3.5 of 6 seconds in the brand loop.

`DeviceDetector` here is device-detector's own class with one change: before the loops, RE2 sets (one pass over the
agent for hundreds of expressions, compiled in C++) say which expressions can match it, and the loops try only those,
in device-detector's order, with device-detector's own expressions. The answer is therefore the one device-detector
gives, as long as an RE2 set never misses an expression that matches, which holds where RE2 and `regex` read an
expression alike. RE2 has no look-arounds: its sets hold each expression without them (which matches more, never
less). An expression RE2 cannot read, or reads more narrowly (see `_NARROWER`), is always tried. Agents that are not
printable ASCII (where `\\d`, `\\s` and case folding differ between the two) take device-detector's unchanged path.
On all 38,121 agents of device-detector's own test data the answers are the same (`python -m
tests.validation.device_index`, BENCHMARKS.md "Ninth sitting"); tests/unit/test_device_index.py compares the two on
the labelled agents and samples of those and of the generator's agents. Run the validation when device-detector's pin
is raised.
"""

from __future__ import annotations

import re
from typing import Any

import re2
import regex
from device_detector import DeviceDetector as _DeviceDetector
from device_detector.parser.device.device import Device as _Device
from device_detector.parser.operating_system import OS as _OS

# Agents of printable ASCII only: where RE2 and `regex` agree on classes, case folding, `.` and `$`.
_PLAIN = re.compile(r"[ -~]*")
_LOOKAROUND = re.compile(r"\(\?<?[=!]")
# Expressions RE2 reads, but more narrowly than `regex` does: `{,n}` (to RE2 literal text), POSIX classes
# (`[[:alpha:]]`, which the look-around scan below does not follow) and letters outside ASCII (whose case folding
# differs). None is in device-detector's data today; one that appears is always tried, as are expressions with flags
# other than IGNORECASE.
_NARROWER = re.compile(r"\{,|\[:|[^\x00-\x7f]")
# Expressions per RE2 set. A set's automaton is built as agents need its states; small sets build theirs fastest (of
# 16 to 4,096 expressions a set, 32 read the 4k month's agents fastest) and stay far within the memory each may use
# (RE2 logs an error if one does not).
_CHUNK = 32
_MEMORY = 64 << 20


class Candidates:
    """Which of a list of device-detector entries (dicts whose `regex` is device-detector's lazy expression) can
    match an agent, in the list's order."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries
        quiet = re2.Options()
        quiet.log_errors = False
        probe = re2.Set.SearchSet(quiet)   # parses each expression (cheaply), only to learn whether RE2 reads it
        options = re2.Options()
        options.case_sensitive = False
        options.max_mem = _MEMORY
        readable, self.always = [], []
        for index, entry in enumerate(entries):
            lazy = entry["regex"]   # device-detector's lazy expression: its attributes read without compiling it
            pattern, flags = object.__getattribute__(lazy, "pattern"), object.__getattribute__(lazy, "flags")
            if flags & ~regex.IGNORECASE or _NARROWER.search(pattern):
                self.always.append(index)
                continue
            pattern = without_lookarounds(pattern)
            try:
                probe.Add(pattern)
            except re2.error:
                self.always.append(index)
            else:
                readable.append((index, pattern))
        self.sets = []
        for start in range(0, len(readable), _CHUNK):
            chunk = readable[start:start + _CHUNK]
            found = re2.Set.SearchSet(options)
            for _, pattern in chunk:
                found.Add(pattern)
            found.Compile()
            self.sets.append((found, [index for index, _ in chunk]))

    def of(self, user_agent: str) -> list[dict[str, Any]]:
        """The entries that can match `user_agent`, in order; all of them when it is not printable ASCII."""
        if not _PLAIN.fullmatch(user_agent):
            return self.entries
        hits = list(self.always)
        for found, indices in self.sets:
            hits += [indices[i] for i in found.Match(user_agent) or ()]
        return [self.entries[i] for i in sorted(hits)]


def without_lookarounds(pattern: str) -> str:
    """`pattern` with each look-ahead and look-behind group, which RE2 cannot read, replaced by an empty group
    (which a quantifier after it then repeats, as it repeated the look-around): it matches wherever `pattern` does
    (a look-around only ever narrows a match), and more."""
    if not _LOOKAROUND.search(pattern):
        return pattern
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):
            out.append("(?:)")
            i = _group_end(pattern, i)
            continue
        end = _token_end(pattern, i)
        out.append(pattern[i:end])
        i = end
    return "".join(out)


def _token_end(pattern: str, i: int) -> int:
    """Where the token at `i` ends: an escape, a character class, or one character."""
    if pattern[i] == "\\":
        return i + 2
    if pattern[i] == "[":
        j = i + 1 + (pattern.startswith("^", i + 1))
        j += pattern.startswith("]", j)   # a leading ] is a member
        while j < len(pattern) and pattern[j] != "]":
            j += 2 if pattern[j] == "\\" else 1
        return j + 1
    return i + 1


def _group_end(pattern: str, i: int) -> int:
    """Where the group opening at `i` closes (just after its parenthesis)."""
    depth = 0
    while i < len(pattern):
        if pattern[i] == "(":
            depth += 1
        elif pattern[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i = _token_end(pattern, i)
    return i


_BY_LIST: dict[int, Candidates] = {}


def _candidates(entries: list[dict[str, Any]]) -> Candidates:
    """One `Candidates` per list (device-detector loads each list once; a brand's models are one list)."""
    found = _BY_LIST.get(id(entries))
    if found is None or found.entries is not entries:
        found = _BY_LIST[id(entries)] = Candidates(entries)
    return found


class Device(_Device):
    """device-detector's mobile parser, trying only the brand and model expressions that can match. (Named as
    device-detector's: its class name picks the parser's keyword list.)"""

    __slots__ = ()

    @property
    def regex_list(self) -> list[dict[str, Any]]:
        entries = super().regex_list
        hints = self.client_hints
        if hints and hints.model:   # the loop then also reads the hints' model: every entry, as device-detector does
            return entries
        return _candidates(entries).of(self.user_agent)

    def extract_model(self) -> None:
        models = self.ua_data.get("models")
        if models:
            self.ua_data["models"] = _candidates(models).of(self.user_agent)
        super().extract_model()


class OS(_OS):
    """device-detector's OS parser, trying only the expressions that can match. (Named as device-detector's.)"""

    __slots__ = ()

    @property
    def regex_list(self) -> list[dict[str, Any]]:
        return _candidates(super().regex_list).of(self.user_agent)


class DeviceDetector(_DeviceDetector):
    """device-detector's `DeviceDetector`, its mobile and OS parsers trying only what can match (see the module)."""

    __slots__ = ()
    DEVICE_PARSERS = tuple(Device if parser is _Device else parser for parser in _DeviceDetector.DEVICE_PARSERS)

    def __new__(cls, *args: Any, **kwargs: Any) -> DeviceDetector:
        # device-detector's constructor answers from a cache of its own (stock) instances unless told otherwise.
        return object.__new__(cls)

    def parse_os(self) -> None:
        """device-detector's `parse_os`, with the OS parser above."""
        if not self.os:
            found = OS(self.user_agent, self.client_hints).parse()
            if found:
                self.os = found
                self.all_details["os"] = found.ua_data
