"""The development XenStore's state: the tree, permissions, transactions and watches.

``ovmd-xenstored`` (:mod:`ovmd.xenstore.server`) is only sockets around this module, so
the semantics live here and can be tested without any I/O. They follow Xen's C
xenstored (``tools/xenstored``: core.c, watch.c, transaction.c, domain.c), because the
point of a development server is that code which works against it works against the
real one:

* Permissions are lists of ``<n|r|w|b><domid>``; the first entry names the owner and the
  access of every domain not listed. The owner and privileged connections (dom0) may do
  anything. A missing node reports ``ENOENT`` only if the nearest existing ancestor
  grants the access asked for, ``EACCES`` otherwise (no information leaks).
* New nodes (and the missing parents ``WRITE``/``MKDIR`` create) inherit their parent's
  permissions; a node created by an unprivileged domain is owned by that domain.
* ``RM`` of a missing node whose parent exists succeeds; ``RM /`` is ``EINVAL``.
* Watches fire once on registration (the server sends that event *after* the ``OK``, as
  xenstored does), then for every change of the watched node or a descendant, with the
  *changed* node's path (relative to the home for a relative watch). ``RM`` fires for
  every removed node that is watched exactly, children first. A connection receives an
  event only if it may read the node or its parent (before or after the change).
* Transactions see a snapshot taken at start; a commit fails with ``EAGAIN`` if any node
  the transaction looked at changed meanwhile, and the transaction is gone either way.
  Watch events for a transaction's changes fire at commit.

Deliberate simplifications: no quotas and no ``XS_PERM_IGNORE`` handling of permissions
naming domains that do not exist.

Costs: every request is O(1) in the size of the tree and of the directories it touches
(apart from listing a directory or removing a subtree), so a ``to-guest`` with thousands
of waiting messages costs no more per message than an empty one. Live nodes are changed
in place (children are an insertion-ordered dict, not a tuple to copy); the snapshot of a
transaction is copy-on-write: starting one copies nothing, and the first change of a live
node while transactions are open saves its previous state for them (a copy of that one
node, once per transaction).
"""
from __future__ import annotations

import logging
import uuid
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

from .errors import XenStoreError
from .protocol import MAX_PAYLOAD, MAX_RELATIVE_PATH, validate_path

log = logging.getLogger(__name__)

PERM_NONE = 0
PERM_READ = 1
PERM_WRITE = 2
PERM_OWNER = 4
_ALL = PERM_READ | PERM_WRITE | PERM_OWNER
_LETTER_BITS = {"n": PERM_NONE, "r": PERM_READ, "w": PERM_WRITE, "b": PERM_READ | PERM_WRITE}

#: ``IS_DOMAIN_INTRODUCED`` answers ``T`` for this domid (DOMID_SELF).
DOMID_SELF = 0x7FF0
INTRODUCE_DOMAIN = "@introduceDomain"
RELEASE_DOMAIN = "@releaseDomain"
SPECIAL_PATHS = (INTRODUCE_DOMAIN, RELEASE_DOMAIN)

#: A permission list: ``(("n", 0), ("r", 5))`` is ``n0 r5``.
Perms = Tuple[Tuple[str, int], ...]
DOM0_ONLY: Perms = (("n", 0),)


def parse_perms(entries: Iterable[str]) -> Perms:
    """``["n0", "r5"]`` -> ``(("n", 0), ("r", 5))``; ``EINVAL`` for a malformed entry."""
    perms = []
    for entry in entries:
        letter, digits = entry[:1], entry[1:]
        if letter not in _LETTER_BITS or not digits.isdigit() or not digits.isascii():
            raise XenStoreError("EINVAL", "bad permission %r" % entry)
        domid = int(digits)
        if domid > 0xFFFF:
            raise XenStoreError("EINVAL", "bad domid in permission %r" % entry)
        perms.append((letter, domid))
    if not perms:
        raise XenStoreError("EINVAL", "empty permission list")
    return tuple(perms)


def format_perms(perms: Perms) -> List[str]:
    """``(("n", 0), ("r", 5))`` -> ``["n0", "r5"]``."""
    return ["%s%d" % entry for entry in perms]


def parent_of(path: str) -> str:
    """xenstored's ``get_parent``: ``/a/b`` -> ``/a``; ``/a``, ``/`` and ``@x`` -> ``/``."""
    slash = path.rfind("/", 1)
    return path[:slash] if slash > 0 else "/"


def _child_path(parent: str, name: str) -> str:
    return "/" + name if parent == "/" else parent + "/" + name


def _basename(path: str) -> str:
    return path[path.rfind("/") + 1:]


def _is_child(child: str, parent: str) -> bool:
    """True if ``child`` is ``parent`` or below it (everything is below ``/``)."""
    if parent == "/":
        return True
    return child == parent or child.startswith(parent + "/")


def domain_layout(domid: int, name: str, vm_uuid: str
                  ) -> List[Tuple[str, Optional[str], Optional[List[str]]]]:
    """``(path, value or None for a directory, permissions or None to inherit)`` of a
    guest's home and its VM's path, in creation order (:meth:`Store.add_domain`)."""
    vm_path = "/vm/%s" % vm_uuid
    home = home_of(domid)
    read_only = ["n0", "r%d" % domid]
    read_write = ["n%d" % domid]
    return [
        (vm_path, None, read_only),
        (vm_path + "/uuid", vm_uuid, None),
        (vm_path + "/name", name, None),
        (home, None, read_only),
        (home + "/vm", vm_path, None),
        (home + "/domid", str(domid), None),
        (home + "/name", name, None),
        (home + "/control", None, read_only),
        (home + "/control/oracle-vmapi", None, read_only),
        (home + "/control/oracle-vmapi/to-guest", None, ["n0", "b%d" % domid]),
        (home + "/control/oracle-vmapi/from-guest", None, read_write),
        (home + "/data", None, read_write),
        (home + "/attr", None, read_write),
    ]


def home_of(domid: int) -> str:
    """The home of a domain, against which its relative paths resolve."""
    return "/local/domain/%d" % domid


class Node:
    """One node. ``children`` is an insertion-ordered set (a dict of names to None), so
    adding or removing one child is O(1) however many there are.

    Nodes are changed in place, only through :meth:`_View.modify` (which gives each
    change a new generation and keeps what open transactions must still see)."""

    __slots__ = ("data", "perms", "children", "generation")

    def __init__(self, data: bytes = b"", perms: Perms = DOM0_ONLY,
                 children: Iterable[str] = (), generation: int = 0) -> None:
        self.data = data
        self.perms = perms
        self.children: Dict[str, None] = dict.fromkeys(children)
        self.generation = generation

    def copy(self) -> "Node":
        node = Node(self.data, self.perms, (), self.generation)
        node.children = dict(self.children)
        return node

    def __repr__(self) -> str:
        return "Node(%r, %s, %r, gen=%d)" % (
            self.data, " ".join(format_perms(self.perms)), tuple(self.children),
            self.generation)


class Watch(NamedTuple):
    path: str        # canonical (absolute or @special)
    token: str
    prefix_len: int  # characters stripped from event paths (relative watches)


class Domain:
    """A domain the store knows: introduced guests and dom0."""

    def __init__(self, domid: int, name: Optional[str] = None) -> None:
        self.domid = domid
        self.name = name
        self.introduced = True
        self.target: Optional[int] = None


class Transaction:
    """A copy-on-write snapshot of the tree plus this transaction's own changes.

    The snapshot is the live tree, except the paths in ``before``: the store records
    there the state at start (a copy of the node, or None if it was missing) of every
    live node that changes while the transaction is open. So ``path in before`` also
    means "changed since the start". The nodes in ``changes`` belong to the
    transaction alone and may be changed in place.
    """

    def __init__(self, tx_id: int, session: "Session") -> None:
        self.id = tx_id
        self.session = session
        self.before: Dict[str, Optional[Node]] = {}  # path -> node at start, or None
        self.changes: Dict[str, Optional[Node]] = {}  # path -> new node, or None (deleted)
        self.accessed: Dict[str, None] = {}  # ordered set of every path looked at
        self.events: Dict[str, bool] = {}  # path -> exact, fired at commit

    @property
    def is_open(self) -> bool:
        return self.session.transactions.get(self.id) is self

    def base_get(self, live: Dict[str, Node], path: str) -> Optional[Node]:
        """The node as it was when the transaction started."""
        before = self.before
        if path in before:
            return before[path]
        return live.get(path)


class Session:
    """One connection as the store sees it: who it is, its watches and transactions.

    ``deliver(path, token)`` is called for every watch event, synchronously while the
    request that caused it is processed, so the caller can queue events ahead of the
    reply.
    """

    def __init__(self, domid: int, privileged: bool,
                 deliver: Callable[[str, str], None]) -> None:
        self.domid = domid
        self.privileged = privileged
        self.deliver = deliver
        self.watches: List[Watch] = []
        self.transactions: Dict[int, Transaction] = {}
        self._next_tx = 1

    @property
    def home(self) -> str:
        return home_of(self.domid)

    def _new_tx_id(self) -> int:
        while self._next_tx == 0 or self._next_tx in self.transactions:
            self._next_tx = (self._next_tx + 1) & 0xFFFFFFFF
        tx_id = self._next_tx
        self._next_tx = (self._next_tx + 1) & 0xFFFFFFFF
        return tx_id

    def __repr__(self) -> str:
        return "Session(d%d%s)" % (self.domid, ", privileged" if self.privileged else "")


class StoreListener:
    """What the server wants to hear about domains (no-ops by default)."""

    def domain_introduced(self, domid: int) -> None:
        """A domain was introduced: it may now connect."""

    def domain_released(self, domid: int) -> None:
        """A domain was released: drop its connections."""


class _View:
    """The nodes as one request sees them: the live tree, or a transaction."""

    def __init__(self, store: "Store", tx: Optional[Transaction]) -> None:
        self.store = store
        self.tx = tx

    def get(self, path: str) -> Optional[Node]:
        tx = self.tx
        if tx is None:
            return self.store.nodes.get(path)
        tx.accessed[path] = None
        changes = tx.changes
        if path in changes:
            return changes[path]
        return tx.base_get(self.store.nodes, path)

    def modify(self, path: str) -> Node:
        """The existing node ``path``, to be changed in place by the caller right away;
        it gets a new generation. In a transaction, the first change works on a copy."""
        tx = self.tx
        store = self.store
        node: Optional[Node]
        if tx is None:
            store._preserve(path, True)
            node = store.nodes[path]
        else:
            tx.accessed[path] = None
            changes = tx.changes
            if path in changes:  # already the transaction's own
                node = changes[path]
            else:  # copy the snapshot's
                base = tx.base_get(store.nodes, path)
                assert base is not None, "modify() of a node that does not exist"
                node = changes[path] = base.copy()
        assert node is not None, "modify() of a node that was removed"
        node.generation = store.next_generation()
        return node

    def put(self, path: str, node: Node) -> None:
        """Store a new node (not one obtained from :meth:`get`)."""
        node.generation = self.store.next_generation()
        if self.tx is None:
            self.store._preserve(path, False)
            self.store.nodes[path] = node
        else:
            self.tx.accessed[path] = None
            self.tx.changes[path] = node

    def delete(self, path: str) -> None:
        if self.tx is None:
            self.store._preserve(path, False)
            self.store.nodes.pop(path, None)
        else:
            self.tx.accessed[path] = None
            self.tx.changes[path] = None


class Store:
    """The whole XenStore: nodes, domains, sessions (connections) and their watches."""

    def __init__(self, listener: Optional[StoreListener] = None) -> None:
        self.listener = listener or StoreListener()
        self._generation = 0
        self.nodes: Dict[str, Node] = {}
        self.sessions: List[Session] = []
        self.domains: Dict[int, Domain] = {0: Domain(0, "Domain-0")}
        #: Open transactions of every session (those closed some other way than
        #: TRANSACTION_END are dropped when next seen).
        self._open: Dict[Transaction, None] = {}
        #: DIRECTORY_PART's encoded child list of the last directory listed:
        #: (path, generation, blob). Generations are unique, so a change invalidates it.
        self._listing: Tuple[str, int, bytes] = ("", -1, b"")
        # What xenstored creates itself, then what xen-init-dom0 adds.
        for path, children in (("/", ("tool", "local")), ("/tool", ("xenstored",)),
                               ("/tool/xenstored", ()), ("/local", ("domain",)),
                               ("/local/domain", ("0",)), ("/local/domain/0", ("domid", "name")),
                               (INTRODUCE_DOMAIN, ()), (RELEASE_DOMAIN, ())):
            self.nodes[path] = Node(b"", DOM0_ONLY, children, self.next_generation())
        self.nodes["/local/domain/0/domid"] = Node(b"0", DOM0_ONLY, (), self.next_generation())
        self.nodes["/local/domain/0/name"] = Node(b"Domain-0", DOM0_ONLY, (),
                                                  self.next_generation())
        self._toolstack = Session(0, True, lambda path, token: None)

    def next_generation(self) -> int:
        self._generation += 1
        return self._generation

    def _preserve(self, path: str, copy: bool) -> None:
        """The live node ``path`` is about to change: open transactions that have not
        seen it change yet keep its current state (``copy``: it will be changed in place;
        otherwise it is being replaced or removed, and can be kept as it is)."""
        if not self._open:
            return
        looked_up = False
        saved: Optional[Node] = None
        for tx in list(self._open):
            if not tx.is_open:
                del self._open[tx]
            elif path not in tx.before:
                if not looked_up:
                    looked_up = True
                    saved = self.nodes.get(path)
                    if copy and saved is not None:
                        saved = saved.copy()
                tx.before[path] = saved

    def _forget_transactions(self, session: Session) -> None:
        for tx in session.transactions.values():
            self._open.pop(tx, None)
        session.transactions.clear()

    # -- sessions ---------------------------------------------------------------------

    def open_session(self, domid: int, privileged: bool,
                     deliver: Callable[[str, str], None]) -> Session:
        session = Session(domid, privileged, deliver)
        self.sessions.append(session)
        return session

    def close_session(self, session: Session) -> None:
        """Forget a connection: its watches and open transactions go with it."""
        session.watches.clear()
        self._forget_transactions(session)
        if session in self.sessions:
            self.sessions.remove(session)

    # -- paths and permissions --------------------------------------------------------

    def canonical(self, session: Session, path: str, allow_special: bool = False) -> str:
        """Resolve ``path`` for ``session`` and check xenstored's rules (``EINVAL``)."""
        if path.startswith("@") and not allow_special:
            raise XenStoreError("EINVAL", "special path %r not allowed here" % path)
        if not path:
            raise XenStoreError("EINVAL", "empty path")
        name = path if path.startswith(("/", "@")) else session.home + "/" + path
        validate_path(name, watch=allow_special)
        if name.startswith("@"):
            return name
        rest = name
        parts = name.split("/", 4)
        if len(parts) == 5 and parts[1] == "local" and parts[2] == "domain" and parts[3].isdigit():
            rest = parts[4]
        if len(rest) > MAX_RELATIVE_PATH:
            raise XenStoreError("EINVAL", "path longer than %d characters" % MAX_RELATIVE_PATH)
        return name

    def _target(self, session: Session) -> Optional[int]:
        domain = self.domains.get(session.domid)
        return domain.target if domain else None

    def perm_for(self, session: Session, perms: Perms) -> int:
        """The access bits ``session`` has on a node with ``perms`` (xenstored's rules)."""
        target = self._target(session)
        owner = perms[0][1]
        if session.privileged or owner == session.domid or (target is not None and owner == target):
            return _ALL
        for letter, domid in perms[1:]:
            if domid == session.domid or (target is not None and domid == target):
                return _LETTER_BITS[letter]
        return _LETTER_BITS[perms[0][0]]

    def _lookup(self, session: Session, view: _View, name: str, perm: int) -> Node:
        """The node ``name`` if ``session`` has ``perm`` on it; else ENOENT or EACCES.

        Like xenstored, a failure says ENOENT only when the nearest existing ancestor
        grants the access: otherwise the caller learns nothing and gets EACCES.
        """
        node = view.get(name)
        if node is not None and (self.perm_for(session, node.perms) & perm) == perm:
            return node
        error = "ENOENT" if node is None else "EACCES"
        ancestor = name
        while True:
            ancestor = parent_of(ancestor)
            found = view.get(ancestor)
            if found is not None or ancestor == "/":
                break
        if found is None or not (self.perm_for(session, found.perms) & perm):
            error = "EACCES"
        raise XenStoreError(error, name)

    def _view(self, session: Session, tx_id: int) -> _View:
        return _View(self, self.transaction(session, tx_id))

    def transaction(self, session: Session, tx_id: int) -> Optional[Transaction]:
        """The open transaction ``tx_id`` of ``session`` (None for 0); else ENOENT."""
        if tx_id == 0:
            return None
        tx = session.transactions.get(tx_id)
        if tx is None:
            raise XenStoreError("ENOENT", "no transaction %d" % tx_id)
        return tx

    # -- watch events -----------------------------------------------------------------

    def _changed(self, view: _View, name: str, exact: bool, node: Optional[Node],
                 old_perms: Optional[Perms] = None) -> None:
        """A node changed: fire watches now, or at commit inside a transaction."""
        tx = view.tx
        if tx is None:
            self._fire(name, exact, node, old_perms)
        elif name not in tx.events:
            tx.events[name] = exact
        elif not exact:
            tx.events[name] = False

    def _watch_permitted(self, session: Session, name: str, node: Optional[Node],
                         old_perms: Optional[Perms]) -> bool:
        """xenstored's rule: the node or its parent must be readable (before or after)."""
        if session.privileged:
            return True
        if old_perms and self.perm_for(session, old_perms) & PERM_READ:
            return True
        if node is None:
            node = self.nodes.get(name)
            if node is None:
                return False
        if self.perm_for(session, node.perms) & PERM_READ:
            return True
        parent = self.nodes.get(parent_of(name))
        return parent is not None and bool(self.perm_for(session, parent.perms) & PERM_READ)

    def _fire(self, name: str, exact: bool, node: Optional[Node],
              old_perms: Optional[Perms] = None) -> None:
        for session in list(self.sessions):
            if not session.watches or not self._watch_permitted(session, name, node, old_perms):
                continue
            for watch in list(session.watches):
                if (watch.path == name) if exact else _is_child(name, watch.path):
                    log.debug("event for %r: %s %s", session, name, watch.token)
                    session.deliver(name[watch.prefix_len:], watch.token)

    # -- reading ----------------------------------------------------------------------

    def read(self, session: Session, path: str, tx_id: int = 0) -> bytes:
        view = self._view(session, tx_id)
        return self._lookup(session, view, self.canonical(session, path), PERM_READ).data

    def directory(self, session: Session, path: str, tx_id: int = 0) -> List[str]:
        view = self._view(session, tx_id)
        return list(self._lookup(session, view, self.canonical(session, path), PERM_READ).children)

    def directory_part(self, session: Session, path: str, offset: int,
                       tx_id: int = 0) -> bytes:
        """The ``DIRECTORY_PART`` reply: ``<generation>\\0`` then as many children (each
        NUL-terminated) from byte ``offset`` of the child list as fit; an extra NUL
        marks the end of the list."""
        view = self._view(session, tx_id)
        name = self.canonical(session, path)
        node = self._lookup(session, view, name, PERM_READ)
        gen = str(node.generation).encode("ascii") + b"\0"
        # A client lists a large directory in many parts: encode it once per generation.
        cached_name, cached_gen, blob = self._listing
        if cached_gen != node.generation or cached_name != name:
            blob = b"".join(child.encode("utf-8", "surrogateescape") + b"\0"
                            for child in node.children)
            self._listing = (name, node.generation, blob)
        if offset >= len(blob):
            return gen + b"\0"
        maxlen = MAX_PAYLOAD - len(gen) - 1
        chunk = b""
        position = offset
        while position < len(blob):
            end = blob.index(b"\0", position) + 1
            if len(chunk) + (end - position - 1) >= maxlen:
                break
            chunk += blob[position:end]
            position = end
        if position >= len(blob):
            chunk += b"\0"
        return gen + chunk

    def get_perms(self, session: Session, path: str, tx_id: int = 0) -> List[str]:
        view = self._view(session, tx_id)
        node = self._lookup(session, view, self.canonical(session, path, True), PERM_READ)
        return format_perms(node.perms)

    def exists(self, path: str) -> bool:
        """Whether an absolute path exists in the live tree (no permission check)."""
        return path in self.nodes

    # -- writing ----------------------------------------------------------------------

    def _create(self, session: Session, view: _View, name: str, data: bytes) -> Node:
        """Create ``name`` and its missing parents (xenstored's ``construct_node``)."""
        missing = [name]
        parent_name = parent_of(name)
        parent = view.get(parent_name)
        while parent is None:
            missing.append(parent_name)
            parent_name = parent_of(parent_name)
            parent = view.get(parent_name)
        node = parent
        for path in reversed(missing):
            parent = view.modify(parent_name)
            parent.children[_basename(path)] = None
            perms = parent.perms
            if not session.privileged:  # unprivileged domains own what they create
                perms = ((perms[0][0], session.domid),) + perms[1:]
            node = Node(data if path == name else b"", perms, ())
            view.put(path, node)
            parent_name = path
        return node

    def write(self, session: Session, path: str, value: bytes, tx_id: int = 0) -> None:
        view = self._view(session, tx_id)
        name = self.canonical(session, path)
        try:
            node = self._lookup(session, view, name, PERM_WRITE)
        except XenStoreError as err:
            if err.name != "ENOENT":
                raise
            node = self._create(session, view, name, bytes(value))
        else:
            node = view.modify(name)
            node.data = bytes(value)
        self._changed(view, name, False, node)

    def mkdir(self, session: Session, path: str, tx_id: int = 0) -> None:
        view = self._view(session, tx_id)
        name = self.canonical(session, path)
        try:
            self._lookup(session, view, name, PERM_WRITE)
        except XenStoreError as err:
            if err.name != "ENOENT":
                raise
            node = self._create(session, view, name, b"")
            self._changed(view, name, False, node)

    def rm(self, session: Session, path: str, tx_id: int = 0) -> None:
        view = self._view(session, tx_id)
        name = self.canonical(session, path)
        try:
            node = self._lookup(session, view, name, PERM_WRITE)
        except XenStoreError as err:
            if err.name == "ENOENT" and view.get(parent_of(name)) is not None:
                return  # already gone: fine, if the parent exists
            raise
        if name == "/":
            raise XenStoreError("EINVAL", "cannot remove /")
        # Post-order, children in list order, as xenstored's tree walk: every removed
        # node fires its exact watchers, the top one also those of its ancestors.
        stack = [(name, node, False)]
        while stack:
            path_, node_, expanded = stack.pop()
            if not expanded:
                stack.append((path_, node_, True))
                for child in reversed(node_.children):
                    child_path = _child_path(path_, child)
                    child_node = view.get(child_path)
                    if child_node is not None:
                        stack.append((child_path, child_node, False))
                continue
            self._changed(view, path_, path_ != name, node_)
            view.delete(path_)
        view.modify(parent_of(name)).children.pop(_basename(name), None)

    def set_perms(self, session: Session, path: str, entries: Iterable[str],
                  tx_id: int = 0) -> None:
        perms = parse_perms(entries)
        view = self._view(session, tx_id)
        name = self.canonical(session, path, True)
        node = self._lookup(session, view, name, PERM_WRITE | PERM_OWNER)
        if not session.privileged and perms[0][1] != node.perms[0][1]:
            raise XenStoreError("EPERM", "only a privileged domain may change the owner")
        old_perms = node.perms
        node = view.modify(name)
        node.perms = perms
        self._changed(view, name, False, node, old_perms)

    # -- watches ----------------------------------------------------------------------

    def watch(self, session: Session, path: str, token: str) -> Tuple[str, str]:
        """Register a watch; returns the initial event, which the caller sends after
        its ``OK`` (xenstored's order)."""
        relative = not path.startswith(("/", "@"))
        name = self.canonical(session, path, True)
        if any(w.path == name and w.token == token for w in session.watches):
            raise XenStoreError("EEXIST", "watch %s %s exists" % (path, token))
        watch = Watch(name, token, len(session.home) + 1 if relative else 0)
        session.watches.append(watch)
        return name[watch.prefix_len:], token

    def unwatch(self, session: Session, path: str, token: str) -> None:
        name = self.canonical(session, path, True)
        for watch in session.watches:
            if watch.path == name and watch.token == token:
                session.watches.remove(watch)
                return
        raise XenStoreError("ENOENT", "no watch %s %s" % (path, token))

    def reset_watches(self, session: Session) -> None:
        """Drop every watch and transaction of the session (``RESET_WATCHES``)."""
        session.watches.clear()
        self._forget_transactions(session)

    # -- transactions -----------------------------------------------------------------

    def transaction_start(self, session: Session, tx_id: int = 0) -> int:
        if self.transaction(session, tx_id) is not None:
            raise XenStoreError("EBUSY", "transactions do not nest")
        tx = Transaction(session._new_tx_id(), session)
        session.transactions[tx.id] = tx
        self._open[tx] = None
        return tx.id

    def transaction_end(self, session: Session, tx_id: int, commit: bool) -> None:
        """Commit (``T``) or abort (``F``); the transaction is gone afterwards, also
        when the commit fails with ``EAGAIN``."""
        tx = self.transaction(session, tx_id)
        if tx is None:
            raise XenStoreError("ENOENT", "not in a transaction")
        del session.transactions[tx_id]
        self._open.pop(tx, None)
        if not commit:
            return
        before = tx.before
        for path in tx.accessed:
            # Changed since the start, unless it was missing then and is again now.
            if path in before and (before[path] is not None or path in self.nodes):
                raise XenStoreError("EAGAIN", "%s changed during the transaction" % path)
        events = []
        for path, exact in tx.events.items():
            node = tx.base_get(self.nodes, path)
            events.append((path, exact, node.perms if node is not None else None))
        for path, node in tx.changes.items():
            self._preserve(path, False)  # other open transactions keep the old node
            if node is None:
                self.nodes.pop(path, None)
            else:
                node.generation = self.next_generation()
                self.nodes[path] = node
        for path, exact, old_perms in events:
            self._fire(path, exact, None, old_perms)

    # -- domains ----------------------------------------------------------------------

    def get_domain_path(self, domid: int) -> str:
        return home_of(domid)

    def is_domain_introduced(self, domid: int) -> bool:
        if domid == DOMID_SELF:
            return True
        domain = self.domains.get(domid)
        return domain is not None and domain.introduced

    def _connected(self, domid: int) -> Domain:
        domain = self.domains.get(domid)
        if domain is None or not domain.introduced:
            raise XenStoreError("ENOENT", "domain %d is not introduced" % domid)
        return domain

    def introduce(self, domid: int, name: Optional[str] = None) -> None:
        """Introduce a domain (``INTRODUCE``): fires ``@introduceDomain`` if it is new."""
        domain = self.domains.get(domid)
        if domain is not None and domain.introduced:
            return  # xenstored only rebinds the event channel
        if domain is None:
            domain = self.domains[domid] = Domain(domid, name)
        domain.introduced = True
        self._fire(INTRODUCE_DOMAIN, True, None)
        self.listener.domain_introduced(domid)

    def release(self, domid: int) -> None:
        """Release a domain (``RELEASE``): its connections lose their watches (so they
        see no more events), ``@releaseDomain`` fires, and the server drops them."""
        if domid == 0:
            raise XenStoreError("EINVAL", "cannot release dom0")
        domain = self._connected(domid)
        for session in self.sessions:
            if session.domid == domid and not session.privileged:
                session.watches.clear()
                self._forget_transactions(session)
        domain.introduced = False
        domain.target = None
        self._fire(RELEASE_DOMAIN, True, None)
        self.listener.domain_released(domid)

    def resume(self, domid: int) -> None:
        if domid == 0:
            raise XenStoreError("EINVAL", "cannot resume dom0")
        self._connected(domid)

    def set_target(self, domid: int, target: int) -> None:
        """Let ``domid`` act on ``target``'s nodes as if it were ``target`` (stub domains)."""
        domain = self._connected(domid)
        self._connected(target)
        domain.target = target

    def add_domain(self, domid: int, name: Optional[str] = None,
                   vm_uuid: Optional[str] = None) -> None:
        """Create a guest's home as a toolstack does, then introduce the guest.

        Permissions (``n0 r<ID>`` is libxl's read-only set, ``n<ID>`` its read-write set):

        ==========================================  ===============
        ``/local/domain/ID``, ``domid``, ``name``    ``n0 rID``
        ``vm`` (``/vm/<uuid>``, the VM's path)       ``n0 rID``
        ``/vm/<uuid>``, ``uuid``, ``name``           ``n0 rID``
        ``control``, ``control/oracle-vmapi``         ``n0 rID``
        ``control/oracle-vmapi/to-guest``             ``n0 bID``
        ``control/oracle-vmapi/from-guest``           ``nID``
        ``data``, ``attr``                            ``nID``
        ==========================================  ===============

        The host (dom0) owns ``to-guest`` and the messages it writes there inherit
        ``n0 bID``: the guest may read and delete them. ``from-guest``, ``data`` and
        ``attr`` belong to the guest, as libxl makes ``data`` and ``attr``. ``vm_uuid``
        names the VM (libxl: the domain's configured UUID, the same on every start of
        that VM, another for a clone); by default one derived from ID and NAME, so the
        same ``--domain`` is the same VM.
        """
        if domid <= 0 or domid >= DOMID_SELF:
            raise XenStoreError("EINVAL", "domid %d is not a guest domid" % domid)
        name = name if name is not None else "guest%d" % domid
        if vm_uuid is None:
            vm_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, "ovmd-xenstored:%d:%s" % (domid, name)))
        layout = domain_layout(domid, name, vm_uuid)
        tools = self._toolstack
        tx_id = self.transaction_start(tools)
        try:
            for old in (home_of(domid), "/vm/%s" % vm_uuid):
                if self.exists(old):
                    self.rm(tools, old, tx_id)
            for path, value, perms in layout:
                if value is None:
                    self.mkdir(tools, path, tx_id)
                else:
                    self.write(tools, path, value.encode("utf-8"), tx_id)
                if perms is not None:
                    self.set_perms(tools, path, perms, tx_id)
        except BaseException:
            self.transaction_end(tools, tx_id, False)
            raise
        self.transaction_end(tools, tx_id, True)
        self.introduce(domid, name)
