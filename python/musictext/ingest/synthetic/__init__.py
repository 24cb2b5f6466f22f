"""The built-in demo corpus (source ``synthetic``): MIDI written here, rendered with FluidSynth.

Every clip is a pure function of ``(seed, index)``: the attributes, the captions, the MIDI and
(given the same FluidSynth build and soundfont) the WAV bytes. Captions are generated from the
same attributes that shape the sound, in several phrasings, so text genuinely predicts audio.

Modules, by concern: ``attributes`` (ClipSpec and its balanced draw), ``captions``, ``midi``,
``render`` (FluidSynth), ``source`` (the Source the registry lists).
"""

from musictext.ingest.synthetic.source import SyntheticSource

__all__ = ["SyntheticSource"]
