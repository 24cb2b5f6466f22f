#!/usr/bin/env bash
# A virtual environment where the real `muq` package runs on this CPU-only machine, for the
# MuQ-MuLan tests of `make test-all` (tests/test_muq_mulan.py). Not an image: the audio image
# (images/Dockerfile.audio) has torch 2.11 with its own torchaudio and torchvision.
#
# Here only torch 2.13.0+cpu can be installed, and PyPI's torchaudio and torchvision are CUDA
# builds. torchaudio imports without its C++ extension once its .so files are removed (muq uses
# only its torch.stft-based transforms); torchvision is left out (see tests/muq_tiny.py).
#
# usage: tools/muq-test-env.sh VENV
set -euo pipefail
venv=${1:?usage: $0 VENV}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}

"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q)
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
# The main pins, minus what requirements/audio.txt pins itself (transformers 4.x ...), plus this
# machine's torch.
"$python" "$root/images/derive_constraints.py" "$root/requirements/constraints.txt" \
  "$root/requirements/audio.txt" > "$constraints"
echo "torch==2.13.0" >> "$constraints"
audio_pin() { grep -E "^$1==" "$root/requirements/audio.txt"; }

"${pip[@]}" -c "$constraints" torch \
  "$(audio_pin transformers)" "$(audio_pin huggingface_hub)" "$(audio_pin tokenizers)" \
  "$(audio_pin librosa)" "$(audio_pin soxr)" \
  einops easydict ftfy beartype regex \
  numpy scipy soundfile pyarrow fsspec pydantic pyyaml tqdm rich tenacity pytest
"${pip[@]}" --no-deps "$(audio_pin torchaudio)" "$(audio_pin x-clip)" "$(audio_pin muq)"
rm -f "$venv"/lib/python3*/site-packages/torchaudio/lib/*.so
"$venv/bin/python" -c "import importlib.util, torchaudio.transforms; assert importlib.util.find_spec('muq')"
echo "muq test env ready: $venv"
