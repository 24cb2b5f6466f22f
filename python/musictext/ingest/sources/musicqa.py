"""MusicQA (``mu-llama/MusicQA`` on the Hugging Face hub): question/answer pairs about music clips,
written by a language model (MPT-7B-chat) from tags and captions, used to train MU-LLaMA.

Published files (from the dataset's generation script, ``MusicQA/generate_dataset.py`` in the
MU-LLaMA repository, and code that reads the hub copy):

- ``PretrainMusicQA.json``: from MusicCaps captions; ``FinetuneMusicQA.json`` (70,011 pairs over
  7,779 clips): from MagnaTagATune tags; ``EvalMusicQA.json`` (5,040 pairs over 560 clips): from
  MTG-Jamendo tags (folders 00-09). Older copies hold one ``MusicQA.json`` (MusicCaps + MTT).
  Each is a JSON *array* written by ``json.dump(indent=2)``; an element is one QA pair,
  ``{"audio_name": "012542.wav", "conversation": [{"from": "human", "value": Q},
  {"from": "gpt", "value": A}]}``, nine per clip. A missing answer is pandas' NaN, which
  ``json.dump`` writes as a bare ``NaN``.
- ``audios.zip`` (≈36.5 GB): the ``audios/`` folder the script fills, members
  ``audios/<audio_name>`` (wav). The member folder is ``archive_root`` (unverified against the hub
  zip: set it to "" for a zip holding the wavs at its root).

The first four questions of every clip are fixed captioning prompts (``CAPTION_PROMPTS``, the
script's ``q_set``); their answers describe the music and become the record's captions. The other
five are open questions ("What is rock music known for?") whose answers are general knowledge,
not descriptions, and are dropped. A prompt counts as a captioning prompt when it equals one of
the four ignoring case, surrounding space and a final "?" / ".".

``audio_name`` is a running counter (``str(count).zfill(6) + ".wav"``) over all three files:
nothing links a clip to its MusicCaps video, MTT clip or Jamendo track, so the group is the
source's own ``musicqa:<stem>`` and cannot be shared with those sources (the same recording may
sit in another source's other split: an evaluation through this source says so). The eval file
is test; the pretraining/finetuning files are split train/valid by a seeded hash of the group.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field

from musictext import storage
from musictext.ingest.base import (
    PublishedFile,
    Source,
    SourceOptions,
    ValidFractionOptions,
    archive_member,
    find_published,
    rejecting,
)
from musictext.ingest.records import ArchiveAudio, Record, make_record, safe_id
from musictext.rejects import Rejections

HUB = "https://huggingface.co/datasets/mu-llama/MusicQA/resolve/main"
ARCHIVE = "audios.zip"
CAPTION_PROMPTS = (
    "Describe the audio",
    "Describe the audio in detail",
    "What do you hear in the audio?",
    "What can be inferred from the audio?",
)
LICENCE_NOTE = "MIT (card); GitHub copy GPL-3.0; audio keeps its source terms"
# file name -> (split rule, where its audio and answers come from)
FILES = {
    "EvalMusicQA.json": ("test", "MTG-Jamendo"),
    "FinetuneMusicQA.json": ("hashed", "MagnaTagATune"),
    "PretrainMusicQA.json": ("hashed", "MusicCaps"),
    "MusicQA.json": ("hashed", "MusicCaps and MagnaTagATune"),
}


def _normalise(prompt: str) -> str:
    return " ".join(prompt.strip().rstrip("?.").split()).lower()


_CAPTIONING = {_normalise(p) for p in CAPTION_PROMPTS}


def is_caption_prompt(prompt) -> bool:
    """Whether a human turn is one of the fixed captioning prompts (case-insensitive)."""
    return isinstance(prompt, str) and _normalise(prompt) in _CAPTIONING


class MusicQAOptions(ValidFractionOptions):
    # Folder of ``audios.zip`` the wavs live under.
    archive_root: str = "audios"


@dataclass
class _Clip:
    audio_name: str
    file: str
    captions: list[str] = field(default_factory=list)
    test: bool = False


def _answer(value) -> str:
    if not isinstance(value, str):  # NaN (a float) where the generator produced no answer
        return ""
    return value.strip()


def _pair(element) -> tuple[str, str, str]:
    """(audio_name, question, answer) of one array element; ValueError naming what is wrong."""
    if not isinstance(element, dict):
        raise ValueError("element is not a JSON object")
    name = element.get("audio_name")
    if not isinstance(name, str) or not name.strip() or "/" in name or name.strip() in (".", ".."):
        raise ValueError(f"no usable audio_name ({name!r})")
    turns = element.get("conversation")
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise ValueError("conversation is not a list of turns")
    human = [t.get("value") for t in turns if t.get("from") == "human"]
    gpt = [t.get("value") for t in turns if t.get("from") == "gpt"]
    if not human or not gpt:
        raise ValueError("conversation lacks a human question or a gpt answer")
    question = human[0]
    if not isinstance(question, str):
        raise ValueError(f"question is not text ({question!r})")
    return name.strip(), question, _answer(gpt[0])


class MusicQASource(Source):
    name = "musicqa"
    description = "MusicQA: MU-LLaMA's generated music QA; the captioning answers as descriptions"
    phase = 2
    Options = MusicQAOptions
    licence = f"{LICENCE_NOTE} (MTG-Jamendo)"
    published = (
        PublishedFile("EvalMusicQA.json", f"{HUB}/EvalMusicQA.json"),
        # Older copies ship the training pairs as one MusicQA.json (MusicCaps + MTT).
        PublishedFile("FinetuneMusicQA.json", f"{HUB}/FinetuneMusicQA.json", required=False,
                      aliases=("MusicQA.json",)),
        PublishedFile("PretrainMusicQA.json", f"{HUB}/PretrainMusicQA.json", required=False),
    )

    def parse(self, meta_dir: str, opts: SourceOptions, rejections: Rejections) -> Iterator[Record]:
        assert isinstance(opts, MusicQAOptions)
        clips: dict[str, _Clip] = {}
        for published in self.published:
            uri = find_published(meta_dir, (published.name, *published.aliases), required=published.required)
            if uri is None:
                continue
            file_name = posixpath.basename(uri)
            for name, question, answer in self._pairs(uri, file_name, rejections):
                clip = clips.get(name)
                if clip is None:
                    clip = clips[name] = _Clip(name, file_name)
                if FILES[file_name][0] == "test":
                    clip.test = True
                if is_caption_prompt(question) and answer and answer not in clip.captions:
                    clip.captions.append(answer)

        zip_url = f"{opts.audio_base(HUB)}/{ARCHIVE}"
        for clip in clips.values():
            stem = posixpath.splitext(clip.audio_name)[0]
            track_id = f"{self.name}-{safe_id(stem)}"
            if not clip.captions:
                rejections.add(track_id, f"no caption: every captioning answer is empty ({clip.file})")
                continue
            # No link to the MusicCaps/MTT/Jamendo item exists (audio_name is a counter).
            group = f"musicqa:{stem}"
            split = opts.split_of(group, clip.test)
            origin = FILES[clip.file][1]
            with rejecting(rejections):
                yield make_record(
                    track_id,
                    track_id=track_id,
                    source=self.name,
                    split=split,
                    captions=clip.captions,
                    licence=f"{LICENCE_NOTE} ({origin})",
                    audio=ArchiveAudio(urls=(zip_url,), member=archive_member(opts.archive_root, clip.audio_name),
                                       format="zip"),
                    group=group,
                    whole_track=True,
                    meta={"audio_name": clip.audio_name, "file": clip.file, "derived_from": origin,
                          "captions_generated": True},
                )

    def _pairs(self, uri: str, file_name: str, rejections: Rejections) -> Iterator[tuple[str, str, str]]:
        try:
            # json accepts the bare NaN json.dump writes for a missing answer.
            elements = json.loads(storage.read_bytes(uri).decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            rejections.add(file_name, f"not a valid JSON file ({err})")
            return
        if not isinstance(elements, list):
            rejections.add(file_name, "not a JSON array of QA pairs")
            return
        for index, element in enumerate(elements):
            try:
                yield _pair(element)
            except ValueError as err:
                name = element.get("audio_name") if isinstance(element, dict) else None
                where = f" ({name})" if isinstance(name, str) and name else ""
                rejections.add(f"{file_name}[{index}]", f"{err}{where}")

