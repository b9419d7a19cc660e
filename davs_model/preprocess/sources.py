"""Clip discovery for the config's ``sources``: LRW, VoxCeleb1/2 (+ box metadata), folder, TSV.

``discover_*`` return clips sorted by ``clip_id``; walks use ``os.scandir`` without stat calls.
Non-UTF-8 names: ``path`` keeps the surrogate-escaped str (opens the file); ``clip_id``, ``word``
and ``speaker`` write the undecodable bytes as ``\\xNN`` (valid UTF-8)."""

from __future__ import annotations

import csv
import logging
import numbers
import os
from collections import Counter
from dataclasses import asdict, dataclass, fields

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
KINDS = ("lrw", "voxceleb1", "voxceleb2", "folder", "manifest", "demo")
BOXES_KINDS = ("", "normalized", "pixels360")
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm")


@dataclass(frozen=True)
class Clip:
    clip_id: str  # "<source name>/<relative path without extension>", '/' separators
    path: str
    source: str
    kind: str
    split: str
    label: int = -1  # -1 = none
    word: str = ""
    speaker: str = ""
    boxes_path: str = ""  # VoxCeleb-style box metadata, "" = none
    boxes_kind: str = ""  # "" | "normalized" (VoxCeleb2) | "pixels360" (VoxCeleb1)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"clip {self.clip_id!r}: kind {self.kind!r} not in {KINDS}")
        if self.split not in SPLITS:
            raise ValueError(f"clip {self.clip_id!r}: split {self.split!r} not in {SPLITS}")
        if self.boxes_kind not in BOXES_KINDS:
            raise ValueError(f"clip {self.clip_id!r}: boxes_kind {self.boxes_kind!r} unknown")
        if type(self.label) is not int:  # exact type first: the ABC check costs ~3 µs a clip (539k in LRW)
            if not isinstance(self.label, numbers.Integral) or isinstance(self.label, bool):
                raise ValueError(f"clip {self.clip_id!r}: label must be an int, got {self.label!r}")
            object.__setattr__(self, "label", int(self.label))  # numpy ints -> int (JSON-friendly)
        for f in ("clip_id", "word", "speaker"):  # undecodable file-name bytes -> "\\xNN"
            if not (v := getattr(self, f)).isascii():
                object.__setattr__(self, f, _safe(v))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Clip:
        if unknown := set(d) - {f.name for f in fields(cls)}:
            raise ValueError(f"Clip.from_dict: unknown keys {sorted(unknown)}")
        return cls(**d)


def _safe(s: str) -> str:
    """A str that encodes as UTF-8: surrogate-escaped bytes become ``\\xNN``."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return os.fsencode(s).decode("utf-8", "backslashreplace")


def _clip_id(name: str, rel: str, keep_ext: bool = False) -> str:
    """``name/rel`` without the extension; '/' separators, no empty, '.' or '..' parts."""
    stem = (rel if keep_ext else os.path.splitext(rel)[0]).replace(os.sep, "/")
    parts = stem.split("/")
    if "" in parts or "." in parts or ".." in parts:
        return _safe("/".join([name, *("_" if p == ".." else p for p in parts if p not in ("", "."))]))
    cid = f"{name}/{stem}"  # the common case, the same string without the generator (539k ids in LRW)
    return cid if cid.isascii() else _safe(cid)


def _check_root(root: str, what: str) -> str:
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{what} root {root!r} is not a directory: fix `root` in sources.")
    return root


def _listdir(d: str) -> list[str]:
    try:
        with os.scandir(d) as it:
            return [e.name for e in it]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _walk(root: str):
    """Yield (dir, [file names]) for every directory below root; is_dir() uses d_type, no stat."""
    stack = [root]
    while stack:
        d = stack.pop()
        files, dirs = [], []
        try:
            with os.scandir(d) as it:
                for e in it:
                    (dirs if e.is_dir() else files).append(e.name)
        except OSError as e:
            log.warning("cannot list %s: %s", d, e)
            continue
        yield d, files
        stack.extend(os.path.join(d, n) for n in sorted(dirs, reverse=True))


def discover_lrw(name, root, splits=SPLITS, word_list: str | None = None) -> list[Clip]:
    """``root/<WORD>/<split>/<WORD>_<NNNNN>.mp4``; label = index of WORD in the sorted word
    folders, or in ``word_list`` (one word per line) if given."""
    root = _check_root(root, f"LRW source {name!r}")
    if bad := [s for s in splits if s not in SPLITS]:
        raise ValueError(f"LRW source {name!r}: unknown splits {bad}; use some of {SPLITS}")
    with os.scandir(root) as it:
        words = sorted(e.name for e in it if e.is_dir())
    if word_list is not None:
        with open(word_list, encoding="utf-8") as f:
            vocab = [w.strip() for w in f if w.strip()]
        labels = {w: i for i, w in enumerate(vocab)}
        if missing := [w for w in words if w not in labels]:
            log.warning("LRW %r: skip %d folders not in %s: %s", name, len(missing), word_list, missing)
    else:
        labels = {w: i for i, w in enumerate(words)}
    clips = []
    for word, split in ((w, s) for w in words if w in labels for s in splits):
        d = os.path.join(root, word, split)
        for f in _listdir(d):
            if f.endswith(".mp4") and not f.startswith("."):
                cid = _clip_id(name, f"{word}/{split}/{f}")
                clips.append(Clip(cid, os.path.join(d, f), name, "lrw", split, labels[word], word))
    clips.sort(key=lambda c: c.clip_id)
    return clips


def _split_of(parts: list[str], split_map: dict, default_split: str) -> str:
    for p in parts:  # folders above the speaker folder: "dev", "test", "vox1_test_mp4", ...
        for tok in p.replace("-", "_").replace(".", "_").split("_"):
            if tok in split_map:
                return split_map[tok]
    return default_split


def discover_voxceleb(name, root, kind, split_map=None, boxes_root=None, default_split="train") -> list[Clip]:
    """Any ``id*/<ytid>/<n>.mp4`` below ``root`` (VoxCeleb2 ``{dev,test}/mp4/idXXXXX/...``,
    VoxCeleb1 alike). The split comes from a folder above the speaker folder named (or with a
    ``_``-token) in ``split_map`` (default dev->train, test->test), else ``default_split``.
    Boxes: ``<n>.txt`` next to the mp4, else a ``.txt`` with the same ``id/ytid/n`` anywhere
    below ``boxes_root`` (e.g. ``{dev,test}/txt/idXXXXX/<ytid>/<n>.txt``)."""
    if kind not in ("voxceleb1", "voxceleb2"):
        raise ValueError(f"VoxCeleb source {name!r}: kind {kind!r}; use voxceleb1 or voxceleb2")
    split_map = {"dev": "train", "test": "test"} if split_map is None else dict(split_map)
    if bad := sorted({*split_map.values(), default_split} - set(SPLITS)):
        raise ValueError(f"VoxCeleb source {name!r}: splits {bad} not in {SPLITS}")
    root = _check_root(root, f"VoxCeleb source {name!r}")
    boxes_kind = "normalized" if kind == "voxceleb2" else "pixels360"
    box_index: dict[tuple[str, str, str], str] = {}
    if boxes_root is not None:
        for d, files in _walk(_check_root(boxes_root, f"VoxCeleb boxes of {name!r}")):
            spk_yt = os.path.relpath(d, boxes_root).split(os.sep)[-2:]
            if len(spk_yt) == 2:
                for f in files:
                    if f.endswith(".txt"):
                        box_index[(*spk_yt, f[:-4])] = os.path.join(d, f)
    clips = []
    for d, files in _walk(root):
        parts = os.path.relpath(d, root).split(os.sep)
        if len(parts) < 2 or not parts[-2].startswith("id"):
            continue
        speaker, ytid = parts[-2], parts[-1]
        split = _split_of(parts[:-2], split_map, default_split)
        names = set(files)
        for f in sorted(files):
            if not f.lower().endswith(".mp4") or f.startswith("."):
                continue
            stem = f[:-4]
            boxes = os.path.join(d, stem + ".txt") if stem + ".txt" in names else ""
            boxes, path = boxes or box_index.get((speaker, ytid, stem), ""), os.path.join(d, f)
            bk, cid = boxes_kind if boxes else "", _clip_id(name, os.path.relpath(path, root))
            clips.append(Clip(cid, path, name, kind, split, -1, "", speaker, boxes, bk))
    clips.sort(key=lambda c: c.clip_id)
    return clips


def discover_folder(name, root, split: str = "train") -> list[Clip]:
    """All video files below ``root``; speaker = first-level folder name if nested, else ""."""
    if split not in SPLITS:
        raise ValueError(f"folder source {name!r}: split {split!r} not in {SPLITS}")
    root = _check_root(root, f"folder source {name!r}")
    found = []
    for d, files in _walk(root):
        for f in files:
            if f.lower().endswith(VIDEO_EXTS) and not f.startswith("."):
                rel = os.path.relpath(os.path.join(d, f), root)
                found.append((rel, os.path.join(d, f)))
    ids = Counter(_clip_id(name, rel) for rel, _ in found)
    clips = []
    for rel, path in found:
        cid = _clip_id(name, rel)
        if ids[cid] > 1:  # a.mp4 and a.mov side by side: keep the extension in the id
            log.warning("folder source %r: %s exists with several extensions", name, cid)
            cid = _clip_id(name, rel, keep_ext=True)
        parts = rel.split(os.sep)
        speaker = parts[0] if len(parts) > 1 else ""
        clips.append(Clip(cid, path, name, "folder", split, speaker=speaker))
    clips.sort(key=lambda c: c.clip_id)
    return clips


def discover_manifest(name, tsv_path) -> list[Clip]:
    """TSV with a header: ``path`` and ``split`` required; optional ``label`` (int), ``word``,
    ``speaker``, ``clip_id``. Relative paths are resolved against the TSV's folder."""
    tsv_path = os.fspath(tsv_path)
    base = os.path.dirname(os.path.abspath(tsv_path))

    def bad(line: int, msg: str) -> ValueError:
        return ValueError(f"{tsv_path}:{line}: {msg}; fix this line of the manifest.")

    clips, seen = [], {}
    with open(tsv_path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")  # rows as lists (csv.DictReader's dict per row: ~2x slower)
        header = next(reader, None) or []
        if missing := [c for c in ("path", "split") if c not in header]:
            raise bad(1, f"header {header} lacks column(s) {missing} (tab-separated names)")
        col = {c: i for i, c in enumerate(header)}  # a repeated name: its last column, as csv.DictReader
        i_path, i_split = col["path"], col["split"]
        i_label, i_word, i_speaker, i_id = (col.get(c) for c in ("label", "word", "speaker", "clip_id"))
        for row in reader:
            if not row:  # a blank line (csv.DictReader skips them too)
                continue
            line = reader.line_num
            if len(row) != len(header):
                raise bad(line, f"not {len(header)} tab-separated fields as in the header")
            path, split = row[i_path].strip(), row[i_split].strip()
            if not path or path.startswith("#"):
                continue
            if split not in SPLITS:
                raise bad(line, f"unknown split {split!r}; use one of {SPLITS}")
            label_s = row[i_label].strip() if i_label is not None else ""
            if label_s and not label_s.lstrip("+-").isdigit():
                raise bad(line, f"label {label_s!r} is not an integer (leave it empty for none)")
            full = path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))
            cid = row[i_id].strip() if i_id is not None else ""
            cid = _clip_id(name, cid, keep_ext=True) if cid else _clip_id(name, path)
            if cid in seen:
                raise bad(line, f"clip id {cid!r} already used on line {seen[cid]}; set clip_id")
            seen[cid] = line
            word = row[i_word].strip() if i_word is not None else ""
            speaker = row[i_speaker].strip() if i_speaker is not None else ""
            label = int(label_s) if label_s else -1
            clips.append(Clip(cid, full, name, "manifest", split, label, word, speaker))
    clips.sort(key=lambda c: c.clip_id)
    return clips
