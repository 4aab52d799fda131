"""``--console-input``: ask for the template parameters on a terminal.

Used when a template is first booted by hand (no host sends parameters): every key that
is not hidden and applies (its ``depends``/``requires`` are met) is asked in module order,
with its description, its choices and its default (Enter accepts the default; a value
already in the params is offered as the default). A wrong answer -- not one of the
choices, or empty for a required key -- is refused with the reason and asked again.
Password keys are read with echo off, twice, and asked again when the two differ; they
are never echoed, shown as a default, or logged. A key that an answer makes applicable
is asked after it, even when it comes earlier in the module's list.

The prompts use the controlling terminal (``/dev/tty``), or the system console when there
is none (first boot under an init system); Ctrl-D or Ctrl-C ends the session with
:class:`ConsoleAborted` and nothing is returned.

A dialog can be cancelled from outside: ``prompt_params(..., cancel=watch)`` waits on the
terminal and on ``watch.fileno()`` together, and when the latter is readable asks
``watch.poll()``; True ends the dialog with :class:`ConsoleCancelled` after the terminal
is restored (echo back on) and the half-typed line discarded. The first-boot console
dialog uses this to stand down when the host's parameters configured the guest first
(:class:`ovmd.firstboot.watch.SysconfigWatch`).
"""
from __future__ import annotations

import io
import logging
import os
import select
import sys
from typing import IO, Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from ovmd.secrets import is_secret_key
from templateconfig.descriptors import (
    DescriptorError,
    ModuleParams,
    check_value,
    is_applicable,
    normalize,
    password_keys,
)
from templateconfig.errors import TemplateConfigError

log = logging.getLogger(__name__)

DEFAULT_TTY = "/dev/tty"
CONSOLE_DEVICE = "/dev/console"


class ConsoleError(TemplateConfigError):
    """No terminal to prompt on."""


class ConsoleAborted(ConsoleError):
    """The user ended the prompts with Ctrl-D (end of input) or Ctrl-C."""


class ConsoleCancelled(ConsoleError):
    """The dialog was cancelled from outside (the ``cancel`` watch said so)."""


class _Terminal:
    """Line input and text output on one terminal (or on streams the caller gives).

    Input is read as bytes where possible and decoded per line, so that a line that is
    not UTF-8 can be refused and asked again instead of breaking the stream.
    """

    def __init__(self, reader: IO[Any], writer: IO[Any], fd: Optional[int],
                 owned: Sequence[Any] = ()) -> None:
        self.reader, self.writer, self.fd = reader, writer, fd
        self._owned = list(owned)
        self.cancel: Any = None  # fileno() + poll() -> bool, see prompt_params

    @classmethod
    def open(cls, stdin: Optional[IO[Any]], stdout: Optional[IO[Any]],
             tty_path: str) -> "_Terminal":
        if stdin is not None:
            writer = stdout if stdout is not None else sys.stdout
            return cls(stdin, writer, _tty_fd(stdin))
        fd = _open_terminal(tty_path)
        reader = io.open(fd, "rb", buffering=0, closefd=False)
        owned: List[Any] = [reader]  # what close() closes: streams, then the fd
        if stdout is None:
            stdout = io.open(fd, "w", encoding="utf-8", errors="replace", closefd=False)
            owned.append(stdout)
        owned_fd = _FdCloser(fd)
        return cls(reader, stdout, fd, owned + [owned_fd])

    def close(self) -> None:
        for stream in reversed(self._owned):
            try:
                stream.close()
            except OSError:  # pragma: no cover - a hung-up terminal
                pass

    def write(self, text: str) -> None:
        self.writer.write(text)
        self.writer.flush()

    def read_line(self, prompt: str, echo: bool = True) -> Optional[str]:
        """Show ``prompt``, read one line without its ending; None at end of input (Ctrl-D).

        With ``echo`` false on a terminal, echo is switched off *before* the prompt is
        shown, so that nothing typed after the prompt appears can be echoed.
        """
        if echo or self.fd is None:
            self.write(prompt)
            line = self._readline()
        else:
            line = self._read_without_echo(prompt)
        if line is None:
            return None
        if self.fd is None:  # input is not a terminal: nothing echoed the line ending
            self.write("\n")
        return line.rstrip("\r\n")

    def _wait_for_input(self) -> None:
        """Return when the terminal has input; raise :class:`ConsoleCancelled` if the
        ``cancel`` watch fires first (and says so)."""
        if self.cancel is None or not isinstance(self.reader, io.RawIOBase):
            return
        try:
            fd = self.reader.fileno()
        except (AttributeError, OSError, ValueError):
            return  # not selectable (a StringIO): cancellation cannot interrupt a read
        while True:
            ready, _, _ = select.select([fd, self.cancel.fileno()], [], [])
            if self.cancel.fileno() in ready and self.cancel.poll():
                if self.fd is not None:
                    import termios
                    termios.tcflush(self.fd, termios.TCIFLUSH)  # a half-typed answer
                raise ConsoleCancelled("the dialog was cancelled")
            if fd in ready:
                return

    def _readline(self) -> Optional[str]:
        if isinstance(self.reader, io.RawIOBase):
            data = bytearray()
            while not data.endswith(b"\n"):
                self._wait_for_input()
                chunk = self.reader.read(1)
                if not chunk:
                    break
                data += chunk
            if not data:
                return None
            return bytes(data).decode("utf-8")  # UnicodeDecodeError: handled by the caller
        line = self.reader.readline()  # buffered: select() could miss what it holds
        if not line:
            return None
        return line.decode("utf-8") if isinstance(line, bytes) else line

    def _read_without_echo(self, prompt: str) -> Optional[str]:
        import termios

        assert self.fd is not None
        old = termios.tcgetattr(self.fd)
        new = list(old)
        new[3] = (new[3] & ~termios.ECHO) | termios.ECHONL
        # TCSAFLUSH: drop anything typed ahead, as getpass does; it was echoed already.
        termios.tcsetattr(self.fd, termios.TCSAFLUSH, new)
        try:
            self.write(prompt)
            return self._readline()
        finally:
            termios.tcsetattr(self.fd, termios.TCSAFLUSH, old)


class _FdCloser:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        os.close(self.fd)


def _tty_fd(stream: IO[Any]) -> Optional[int]:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return fd if os.isatty(fd) else None


def _open_terminal(tty_path: str) -> int:
    """The terminal to prompt on: ``tty_path``, else (for the default) the console.

    Opened without O_NOCTTY: a process without a controlling terminal that leads its
    session (first boot) gets this one, so that Ctrl-C reaches it.
    """
    candidates = [tty_path]
    if tty_path == DEFAULT_TTY:
        candidates.append(CONSOLE_DEVICE)
    problems = []
    for path in candidates:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            problems.append("%s: %s" % (path, exc.strerror))
            continue
        if not os.isatty(fd):
            os.close(fd)
            problems.append("%s: not a terminal" % path)
            continue
        return fd
    raise ConsoleError("no terminal to prompt on (%s)" % "; ".join(problems))


# --- the questions --------------------------------------------------------------------

#: A module's own check of one answer: (key, value) -> the reason it is wrong, or None.
ValueCheck = Callable[[str, str], Optional[str]]


def _problem(desc: Mapping[str, Any], value: Optional[str], secret: bool,
             check: Optional[ValueCheck]) -> Optional[str]:
    """What is wrong with an answer: the descriptor's rules, then the module's check."""
    problem = check_value(desc, value, secret)
    if problem is None and value not in (None, "") and check is not None:
        assert value is not None
        problem = check(desc["key"], value)
    return problem


class _Session:
    def __init__(self, terminal: _Terminal, secret_keys: set,
                 check: Optional[ValueCheck] = None) -> None:
        self.term = terminal
        self.secret_keys = secret_keys
        self.check = check

    def ask(self, desc: Mapping[str, Any], current: Optional[str]) -> Optional[str]:
        """The answer for one key; None leaves the key unset."""
        key = desc["key"]
        secret = desc["password"] or is_secret_key(key, self.secret_keys)
        default = current if current not in (None, "") else desc["default"]
        self.term.write("\n%s\n" % key)
        for line in desc["description"].splitlines():
            if line.strip():
                self.term.write("  %s\n" % line.strip())
        if desc["choices"]:
            self.term.write("  Choices: %s\n" % ", ".join(desc["choices"]))
        while True:
            if secret:
                value = self._ask_secret(default, current not in (None, ""))
            else:
                value = self._ask_plain(desc, default)
            if value is None:  # Enter: the default (or nothing)
                value = default
            value = _canonical_choice(desc, value)
            problem = _problem(desc, value, secret, self.check)
            if problem is None:
                return value if value not in (None, "") else None
            self.term.write("  %s: %s. Please try again.\n" % (key, problem))

    def _ask_plain(self, desc: Mapping[str, Any], default: Optional[str]) -> Optional[str]:
        if default not in (None, ""):
            prompt = "  Value [%s]: " % default
        elif desc["required"]:
            prompt = "  Value (required): "
        else:
            prompt = "  Value (Enter to leave unset): "
        answer = self._read(prompt, echo=True).strip()
        return answer or None

    def _ask_secret(self, default: Optional[str], is_current: bool) -> Optional[str]:
        hint = ""
        if default not in (None, ""):
            hint = " (Enter keeps the current one)" if is_current else " (Enter for the default)"
        while True:
            first = self._read("  Password%s: " % hint, echo=False)
            if first == "":
                return None
            second = self._read("  Password again: ", echo=False)
            if first == second:
                return first
            self.term.write("  The two passwords differ. Please try again.\n")

    def _read(self, prompt: str, echo: bool) -> str:
        while True:
            try:
                line = self.term.read_line(prompt, echo=echo)
            except UnicodeDecodeError:
                self.term.write("  That was not valid UTF-8 text. Please try again.\n")
                continue
            if line is None:
                raise ConsoleAborted("input ended (Ctrl-D) before all parameters were given")
            return line


def _canonical_choice(desc: Mapping[str, Any], value: Optional[str]) -> Optional[str]:
    """``true`` -> ``True`` when the choices spell it so (case-insensitive match)."""
    if value is None or not desc["choices"] or value in desc["choices"]:
        return value
    matches = [c for c in desc["choices"] if c.lower() == value.lower()]
    return matches[0] if len(matches) == 1 else value


def _questions(modules: Sequence[ModuleParams]) -> List[Tuple[str, dict]]:
    questions = []
    for name, descs in modules:
        for desc in descs or ():
            desc = normalize(desc, name)
            if not desc["hidden"]:
                questions.append((name, desc))
    return questions


def _end_line(terminal: _Terminal) -> None:
    try:
        terminal.write("\n")
    except (OSError, ValueError):  # the terminal hung up: nothing to tidy
        pass


def prompt_params(modules: Sequence[ModuleParams], params: Mapping[str, str],
                  stdin: Optional[IO[Any]] = None, stdout: Optional[IO[Any]] = None,
                  tty_path: str = DEFAULT_TTY, known: Iterable[str] = (),
                  cancel: Any = None, check: Optional[ValueCheck] = None) -> Dict[str, str]:
    """Ask on the terminal for every applicable, non-hidden key; the completed params.

    ``modules`` is ``[(module name, [descriptor, ...]), ...]`` in run order; ``params``
    the parameters known so far (their values are offered as defaults; hidden keys and
    keys never asked are passed through unchanged). Returns a new dict. Input comes from
    ``stdin`` when given (echo is switched off for passwords if it is a terminal), else
    from ``tty_path`` opened read-write (falling back to ``/dev/console`` for the
    default ``/dev/tty``); prompts go to ``stdout`` when given, else to that terminal.

    Keys in ``known`` (for example the keys ovmd's cache already holds) are not asked
    when ``params`` has a valid value for them (a required one that is empty, or a value
    outside its choices, is still asked).

    ``check(key, value)``: the module's own check of an answer (the standard modules'
    validators), its reason or None; a refused answer is asked again.

    ``cancel``: an object with ``fileno()`` and ``poll() -> bool``; while waiting for an
    answer on the terminal (the default terminal, not caller streams) the dialog also
    waits on ``cancel.fileno()`` and, when it is readable and ``cancel.poll()`` is true,
    restores the terminal and raises :class:`ConsoleCancelled`.

    Raises :class:`ConsoleAborted` on Ctrl-D or Ctrl-C, and :class:`ConsoleError` when
    no terminal can be opened or a descriptor is malformed (naming its module, key and
    field; checked before anything is asked).
    """
    try:
        questions = _questions(modules)
    except DescriptorError as exc:
        raise ConsoleError("cannot prompt: %s" % exc) from None
    result = dict(params)
    secret_keys = password_keys(modules)
    asked = _already_given(questions, result, set(known), secret_keys, check)
    terminal = _Terminal.open(stdin, stdout, tty_path)
    terminal.cancel = cancel
    try:
        _ask_all(questions, result, asked, terminal, _Session(terminal, secret_keys, check))
        terminal.write("\n")
    except KeyboardInterrupt:
        _end_line(terminal)
        raise ConsoleAborted("interrupted (Ctrl-C) before all parameters were given") from None
    except (ConsoleAborted, ConsoleCancelled):
        _end_line(terminal)
        raise
    finally:
        terminal.close()
    return result


def _already_given(questions, params: Mapping[str, str], known: Set[str],
                   secret_keys: Set[str], check: Optional[ValueCheck]) -> Set[str]:
    """The keys not to ask: in ``known`` with a valid value in ``params``."""
    given = set()
    for _name, desc in questions:
        key = desc["key"]
        if key in known and key in params and _problem(
                desc, params[key], desc["password"] or is_secret_key(key, secret_keys),
                check) is None:
            given.add(key)
    return given


def _ask_all(questions, result: Dict[str, str], asked: Set[str], terminal: "_Terminal",
             session: "_Session") -> None:
    """Ask every applicable question not asked yet, in order, into ``result``; again
    after a pass, for keys an answer made applicable."""
    heading = None
    progress = True
    while progress:
        progress = False
        for name, desc in questions:
            key = desc["key"]
            if key in asked or not is_applicable(desc, result):
                continue
            if name != heading:
                terminal.write("\n== %s ==\n" % name)
                heading = name
            answer = session.ask(desc, result.get(key))
            asked.add(key)
            progress = True
            if answer is not None:
                result[key] = answer
            log.debug("console: %s %s", key, "answered" if answer is not None else "left unset")


__all__ = ["CONSOLE_DEVICE", "DEFAULT_TTY", "ConsoleAborted", "ConsoleCancelled", "ConsoleError",
           "prompt_params"]
