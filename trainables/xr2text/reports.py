"""Report text: word tokenizer, vocabulary, curriculum stages, and the numeric columns that carry text.

Used by ``python -m platform.run xr2text`` (through ``trainables.xr2text.data``) and by
``python -m platform.predict RUN_DIR image.png`` (decoding ids back to words). No torch, no Ray.

Ray's ``iter_torch_batches`` carries numbers only, so a study's id and reference report travel as
zero-padded UTF-8 byte arrays and come back as exactly the same strings.
"""

from __future__ import annotations

import re

import numpy as np

from trainables import vocab
from trainables.vocab import decode  # noqa: F401 - xr2text's decode is the shared one

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = vocab.PAD_ID, vocab.START_ID, vocab.END_ID, vocab.UNK_ID

# Words (IU's anonymised "XXXX" included) and each punctuation mark on its own, as R2Gen splits them.
_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")

# MeSH headings that say nothing about the patient's chest.
NOT_FINDINGS = {"normal", "no indexing", "technical quality of image unsatisfactory"}
SEVERE = {"severe", "large", "extensive", "massive"}

# Keyword fallback (annotation.json has no MeSH): a finding named in a sentence without negation.
# Patterns start at a word boundary; a pattern without a closing \b also matches longer words.
FINDING_PATTERNS = {
    "cardiomegaly": r"\bcardiomegaly|\benlarged heart|\bheart (?:size )?is (?:\w+ )?enlarged",
    "effusion": r"\beffusion",
    "opacity": r"\bopacit|\bairspace disease|\bconsolidation|\binfiltrat",
    "atelectasis": r"\batelecta",
    "pneumothorax": r"\bpneumothora",
    "edema": r"\bedema",
    "nodule": r"\bnodul|\bmass\b",
    "granuloma": r"\bgranuloma",
    "emphysema": r"\bemphysema|\bhyperinflat|\bhyperexpan|\bcopd\b",
    "pneumonia": r"\bpneumonia",
    "fracture": r"\bfracture",
    "scoliosis": r"\bscoliosis",
    "degenerative": r"\bdegenerative|\bosteophyt|\bspondylosis",
    "device": r"\bcatheter|\bpacemaker|\bsternotomy|\bsurgical clips|\bport\b",
}
_FINDINGS = {name: re.compile(pattern) for name, pattern in FINDING_PATTERNS.items()}
_NEGATION = re.compile(r"\b(no|without|negative|free of|resolved|clear)\b")


def words(text: str) -> list[str]:
    """Lowercased words and punctuation marks: the tokenization of targets, references and predictions."""
    return _TOKEN.findall(str(text).lower())


def normalized(text: str) -> str:
    """The text as it is scored: its words joined by single spaces (pycocoevalcap splits on spaces)."""
    return " ".join(words(text))


def build_vocab(reports: list[str], size: int, min_count: int) -> list[str]:
    """Specials, then the training reports' words seen at least min_count times, most frequent first."""
    return vocab.build((words(report) for report in reports), SPECIALS, size, min_count)


def encode(text: str, index: dict[str, int], max_tokens: int) -> np.ndarray:
    """[max_tokens + 2] int64: <bos>, up to max_tokens word ids, <eos>, then <pad>."""
    ids = [index.get(word, UNK_ID) for word in words(text)[:max_tokens]]
    out = np.full(max_tokens + 2, PAD_ID, dtype=np.int64)
    out[: len(ids) + 2] = [BOS_ID, *ids, EOS_ID]
    return out


def to_bytes(texts: list[str]) -> np.ndarray:
    """[N, longest] uint8: each text's UTF-8 bytes, zero-padded (so it survives iter_torch_batches)."""
    encoded = [t.encode("utf-8") for t in texts]
    out = np.zeros((len(encoded), max([len(e) for e in encoded] + [1])), dtype=np.uint8)
    for row, data in zip(out, encoded):
        row[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return out


def from_bytes(row) -> str:
    data = bytes(np.asarray(row, dtype=np.uint8).tolist())
    return data.rstrip(b"\0").decode("utf-8")


# ---------------------------------------------------------------- curriculum stages


def mesh_findings(mesh: str, problems: str) -> tuple[set[str], bool]:
    """Distinct findings of a study from its MeSH headings (else Problems), and whether one is severe."""
    field = mesh if str(mesh).strip() else problems
    findings, severe = set(), False
    for heading in str(field).split(";"):
        parts = [p.strip().lower() for p in heading.split("/") if p.strip()]
        if not parts or parts[0] in NOT_FINDINGS:
            continue
        findings.add(parts[0])
        severe = severe or bool(SEVERE.intersection(parts[1:]))
    return findings, severe


def keyword_findings(report: str) -> tuple[set[str], bool]:
    """Findings named in the report's sentences that do not negate them; severe when a sentence says so."""
    findings, severe = set(), False
    for sentence in re.split(r"[.;]\s*", str(report).lower()):
        if _NEGATION.search(sentence):
            continue
        named = {name for name, pattern in _FINDINGS.items() if pattern.search(sentence)}
        findings |= named
        severe = severe or (bool(named) and any(word in sentence.split() for word in SEVERE))
    return findings, severe


def stage_of(findings: set[str], severe: bool, complex_min: int) -> int:
    """0 normal, 1 one finding, 2 several, 3 complex (complex_min or more findings, or several with one severe)."""
    count = len(findings)
    if count == 0:
        return 0
    if count >= complex_min or (severe and count >= 2):
        return 3
    return 1 if count == 1 else 2
