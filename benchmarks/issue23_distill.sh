#!/bin/bash
# Issue 23: the demo AnoDDPM's few-step students, each halving the previous one's hops
# (32 DDIM hops of the teacher -> 4 -> 2 -> 1), on the tumour track's healthy training slices.
# About 55 minutes of the 2-core machine; rerun to resume.
set -euo pipefail
cd "$(dirname "$0")/.."
anodiff distill src/anodiff/assets/demo/anoddpm-tumour --data runs/synth/tumour --steps 4 --out runs/i23/s4
anodiff distill runs/i23/s4 --data runs/synth/tumour --steps 2 --out runs/i23/s2
anodiff distill runs/i23/s2 --data runs/synth/tumour --steps 1 --out runs/i23/s1
