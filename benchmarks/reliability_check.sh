#!/bin/bash
# Issue #10 and #36 scenarios through the CLI on generated data: exit code and last stderr line of each
# (docs/reliability.md quotes its output). Usage: PYTHON=.venv/bin/python benchmarks/reliability_check.sh
set -u
PY="${PYTHON:-python}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"; export PYTHONPATH="$REPO/src"
M="$PY -m medcl -q"
W="$(mktemp -d)"; L="$W/log"; mkdir -p "$W/w"; cd "$W/w"
$PY -c "from medcl.data.synthetic import generate_dataset; generate_dataset('data', num_train=4, num_val=1, num_test=2, shape=(64,64,4), seed=3)" >/dev/null
T="--crop-size 32 --batch-size 2 --widths 4 8 16 --num-threads 1 --device cpu --log-interval 1"
show() { local name="$1"; shift; "$@" >$L.out 2>$L.err; local rc=$?; cat $L.err >> $L.all; (exit $rc); echo "[$name] exit $? :: $(grep -v '^\s*$' $L.err | grep -v 'it/s\|step/s\|case/s\|s/it' | tail -1 | cut -c1-230)"; }
show train-ok $M train --data data --out run $T --iterations 4 --val-interval 2
show predict-into-input $M predict -i data/TestSet/images -o data/TestSet/images -m run --overwrite
cp -r data/TestSet/images in; $PY -c "open('in/zz_bad.nii.gz','wb').write(__import__('os').urandom(3000))"
show predict-bad-case $M predict -i in -o pred -m run
ls pred; stat -c '%a %n' pred/*.nii.gz | head -1
show predict-continue $M predict -i data/TestSet/images -o pred -m run/checkpoints/best.pt --continue
cp -r data d2; $PY -c "open('d2/train/images/'+sorted(__import__('os').listdir('d2/train/images'))[0],'wb').write(__import__('os').urandom(3000))"
show train-random-bytes $M train --data d2 --out r2 $T --iterations 2
cp -r data d3; $PY - <<'P'
import struct, gzip, os
d='d3/TestSet/images'; f=sorted(os.listdir(d))[0]; raw=bytearray(gzip.decompress(open(f'{d}/{f}','rb').read()))
struct.pack_into('<h', raw, 70, 999); open(f'{d}/{f}','wb').write(gzip.compress(bytes(raw)))
d='d3/train/images'; f=sorted(os.listdir(d))[1]; raw=bytearray(gzip.decompress(open(f'{d}/{f}','rb').read()))
struct.pack_into('<f', raw, 80, 0.0); open(f'{d}/{f}','wb').write(gzip.compress(bytes(raw)))
P
show predict-datatype-999-folder $M predict -i d3/TestSet/images -o p3 -m run
show predict-datatype-999-file $M predict -i d3/TestSet/images/case06_DE.nii.gz -o p3b -m run
show train-pixdim-0 $M train --data d3 --out r3 $T --iterations 2
cp -r data d4; cp d4/train/images/$(ls d4/train/images | head -1) d4/train/images/._mac.nii.gz; echo junk > d4/train/images/._junk.nii.gz
show train-appledouble $M train --data d4 --out r4 $T --iterations 2 --val-interval 2
echo '{"data": "data", "iterations": null}' > c.json
show config-null $M train --out r5 --config c.json
show target-spacing-0.001 $M train --data data --out r6 $T --target-spacing 0.001
show num-threads-0 $M train --data data --out r7 --num-threads 0
show overlays-neg $M predict -i in -o p8 -m run --overlays -3
show demo-minutes-neg $M demo --out demo --minutes -1; ls -d demo 2>&1 | head -1
mkdir -p usr/data; cp -r data/* usr/data/
show demo-data-overwrite $M demo --out usr --data usr/data --overwrite --minutes 0.01 --device cpu
ls usr/data | tr '\n' ' '; echo
# SIGTERM to a real training process with --val-interval 0
$M train --data data --out sig $T --iterations 100000 --val-interval 0 >/dev/null 2>$L.sig & pid=$!
for i in $(seq 1 120); do sleep 1; [ -f sig/metrics.jsonl ] && [ $(wc -l < sig/metrics.jsonl) -ge 3 ] && break; done
kill -TERM $pid; wait $pid; echo "[sigterm] exit $? :: $(tail -1 $L.sig | cut -c1-230)"
$PY -c "import torch; print('last.pt step', torch.load('sig/checkpoints/last.pt', weights_only=True)['step'])"
head -c 100 /dev/urandom > sig/checkpoints/.last.pt.abcd1234.tmp.pt
show resume-after-sigterm $M train --out sig --resume --iterations $(( $(wc -l < sig/metrics.jsonl) + 2 ))
ls -a sig/checkpoints | tr '\n' ' '; echo; $PY -c "
import json; s=[json.loads(l)['step'] for l in open('sig/metrics.jsonl') if '\"step\"' in l and 'val' not in l]; print('duplicated steps', len(s)-len(set(s)))"
mkdir -p cfgonly; cp run/config.json cfgonly/
show fresh-on-configured $M train --data data --out cfgonly $T
show resume-configured $M train --out cfgonly --resume --iterations 2
# --- issue #36 ---
# a label stored LAS beside its RAS image: the same voxels (flip + shift) train; the flip without
# the shift (a mirrored header) is refused, also with --geometry image
cp -r data g1; cp -r data g2; $PY - <<'P'
import nibabel as nib, numpy as np, os
for root, shift in (("g1", True), ("g2", False)):
    d = f"{root}/train/labels"; f = sorted(os.listdir(d))[0]; img = nib.load(f"{d}/{f}")
    aff = img.affine.copy(); n = img.shape[0]
    if shift: aff[:3, 3] += aff[:3, 0] * (n - 1)
    aff[:3, 0] *= -1
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[::-1].copy(), aff, img.header), f"{d}/{f}")
P
show label-las-same-voxels $M train --data g1 --out rg1 $T --iterations 2 --val-interval 2
show label-mirrored-header $M train --data g2 --out rg2 $T --iterations 2
show label-mirrored-geometry-image $M train --data g2 --out rg3 $T --iterations 2 --geometry image
# convert owns its output: a stale case of an earlier conversion is removed; a file it did not
# write is refused; an output inside the source is refused
show convert-first $M convert data nn; cp -r data dsmall; rm dsmall/train/*/case01_DE*
show convert-overwrite $M convert dsmall nn --overwrite; ls nn/imagesTr | tr '\n' ' '; echo
echo mine > nn/imagesTr/user_0000.nii.gz
show convert-user-file $M convert dsmall nn --overwrite
show convert-into-source $M convert data data --overwrite
rm nn/imagesTr/user_0000.nii.gz; cp nn/imagesTr/case02_DE_0000.nii.gz nn/imagesTr/extra_0000.nii.gz; cp nn/labelsTr/case02_DE.nii.gz nn/labelsTr/extra.nii.gz
show nnunet-numtraining $M train --data nn --out rnn $T --iterations 2
# demo --overwrite keeps the user's files in its folders
mkdir -p usr/predictions; echo keep > usr/predictions/notes.txt
show demo-overwrite-user-file $M demo --out usr --data usr/data --overwrite --minutes 0.01 --device cpu
ls usr/predictions | grep -c notes.txt
# options checked before anything is read or written; the retry is not blocked
show crop-size-37 $M train --data data --out rc $T --crop-size 37
show lr-nan $M train --data data --out rc $T --lr nan
show retry-after-bad-option $M train --data data --out rc $T --iterations 2 --val-interval 2
# checkpoints that do not fit, random bytes as a checkpoint
# (predict reads the network from the checkpoint itself; a run folder whose config.json says
# another network than its weights fails at --resume)
cp -r run wrong; $PY -c "
import json; c=json.load(open('wrong/config.json')); c['widths']=[8,16,32]; json.dump(c, open('wrong/config.json','w'))"
show checkpoint-other-network $M train --out wrong --resume --iterations 8
head -c 5000 /dev/urandom > rnd.pt
show checkpoint-random-bytes $M predict -i data/TestSet/images -o pr -m rnd.pt
show overwrite-and-continue $M predict -i data/TestSet/images -o pred -m run --overwrite --continue
# Ctrl-C during start-up imports
# (from Python, with SIGINT's default action restored in the child)
$PY - "$L.int" $M train --data data --out rsig $T <<'P'
import signal, subprocess, sys, time
with open(sys.argv[1], "w") as err:
    # SIGINT as a terminal delivers it (a script started in the background inherits it ignored)
    proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=err,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    print(f"[sigint-startup] exit {proc.wait()} :: ", end="")
P
tail -1 $L.int | cut -c1-230; cat $L.int >> $L.all
# annotate on a port in use
$PY -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', 18765)); s.listen(); time.sleep(60)" & lp=$!
until $PY -c "import socket; socket.create_connection(('127.0.0.1', 18765), 1)" 2>/dev/null; do sleep 0.2; done
show annotate-port-taken $M annotate data --port 18765; kill $lp
echo "tracebacks in all stderr: $(grep -c Traceback $L.all)"
