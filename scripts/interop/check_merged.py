#!/usr/bin/env python3
"""PyTorch reads what `sam2-lora merge` writes.

    python3 scripts/interop/check_merged.py MERGED.pt [--expect EXPECTED.safetensors]
        [--official-keys sam2.1_hiera_tiny.image_encoder_keys.txt]
        [--sam2 CHECKOUT --model nano|tiny]

- `torch.load(MERGED, weights_only=True)` must give {"model": {name: float32 tensor}};
- --expect: every key of EXPECTED (a safetensors file) present, in the same order, nothing
  else, same shape, bit-identical values;
- --official-keys: the `image_encoder.*` keys and shapes equal an official checkpoint's listing
  (lines `model.image_encoder.<key>\\t<dtype>\\t[shape]`);
- --sam2: the official `ImageEncoder` (imported from a facebookresearch/sam2 checkout, built
  at --model's configuration) loads the encoder part with `load_state_dict(strict=True)`.
Prints one JSON line with what was checked; exits 1 naming the first problems otherwise.
"""
import argparse
import json
import os
import struct
import sys
import types

import torch


def read_safetensors(path):
    """A minimal reader (Debian has no `safetensors` module): {name: tensor}, in file order."""
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    header.pop('__metadata__', None)
    dtypes = {'F32': torch.float32, 'F64': torch.float64, 'F16': torch.float16, 'BF16': torch.bfloat16}
    out = {}
    for name, t in sorted(header.items(), key=lambda kv: kv[1]['data_offsets'][0]):
        b, e = t['data_offsets']
        out[name] = torch.frombuffer(bytearray(body[b:e]), dtype=dtypes[t['dtype']]).reshape(t['shape'])
    return out


def official_encoder(checkout, model):
    pkg = types.ModuleType('sam2')
    pkg.__path__ = [os.path.join(checkout, 'sam2')]
    sys.modules['sam2'] = pkg
    for name, attrs in [('iopath', {}), ('iopath.common', {}), ('iopath.common.file_io', {'g_pathmgr': None}),
                        ('tqdm', {'tqdm': lambda x, **k: x})]:
        try:
            __import__(name)
        except ImportError:
            m = types.ModuleType(name)
            m.__dict__.update(attrs)
            sys.modules[name] = m
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine
    # nano: src/model/config.ts NANO_CONFIG; tiny: sam2.1_hiera_t.yaml.
    trunk, d_model, channels = {
        'nano': (dict(embed_dim=16, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,),
                      window_pos_embed_bkg_spatial_size=(7, 7), window_spec=(8, 4, 14, 7)), 32, [128, 64, 32, 16]),
        'tiny': (dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
                      window_pos_embed_bkg_spatial_size=(7, 7), window_spec=(8, 4, 14, 7)), 256, [768, 384, 192, 96]),
    }[model]
    neck = FpnNeck(position_encoding=PositionEmbeddingSine(num_pos_feats=d_model), d_model=d_model,
                   backbone_channel_list=channels, fpn_top_down_levels=[2, 3], fpn_interp_model='nearest')
    return ImageEncoder(Hiera(**trunk), neck, scalp=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('merged')
    ap.add_argument('--expect')
    ap.add_argument('--official-keys')
    ap.add_argument('--sam2')
    ap.add_argument('--model', default='nano')
    a = ap.parse_args()
    problems, done = [], {'torch': torch.__version__}

    ckpt = torch.load(a.merged, map_location='cpu', weights_only=True)
    if not isinstance(ckpt, dict) or 'model' not in ckpt:
        sys.exit(f'{a.merged}: expected {{"model": state_dict}}, got {type(ckpt).__name__}')
    sd = ckpt['model']
    done['weights_only_load'] = f'{len(sd)} tensors'
    for k, v in sd.items():
        if not torch.is_tensor(v) or v.dtype != torch.float32:
            problems.append(f'{k}: not a float32 tensor')

    if a.expect:
        want = read_safetensors(a.expect)
        if list(sd.keys()) != list(want.keys()):
            missing = [k for k in want if k not in sd]
            extra = [k for k in sd if k not in want]
            problems.append(f'keys differ: missing {missing[:5]}, unexpected {extra[:5]}'
                            + ('' if missing or extra else ' (order differs)'))
        for k, w in want.items():
            g = sd.get(k)
            if g is None:
                continue
            if tuple(g.shape) != tuple(w.shape):
                problems.append(f'{k}: shape {list(g.shape)}, expected {list(w.shape)}')
            elif not torch.equal(g, w.to(g.dtype)):
                problems.append(f'{k}: values differ (max |d| {float((g.double() - w.double()).abs().max()):.3g})')
        done['expect'] = f'{len(want)} keys, shapes and values bit-exact'

    if a.official_keys:
        official = {}
        with open(a.official_keys) as f:
            for line in f:
                if line.startswith('#') or not line.strip():
                    continue
                name, _dtype, shape = line.rstrip('\n').split('\t')[:3]
                official[name.removeprefix('model.')] = json.loads(shape)
        ours = {k: list(v.shape) for k, v in sd.items() if k.startswith('image_encoder.')}
        if set(ours) != set(official):
            problems.append(f'image_encoder keys differ from {a.official_keys}: missing '
                            f'{sorted(set(official) - set(ours))[:5]}, unexpected {sorted(set(ours) - set(official))[:5]}')
        for k, s in official.items():
            if k in ours and ours[k] != s:
                problems.append(f'{k}: shape {ours[k]}, official {s}')
        done['official_keys'] = f'{len(official)} image_encoder keys and shapes'

    if a.sam2:
        enc = official_encoder(os.path.abspath(a.sam2), a.model)
        part = {k[len('image_encoder.'):]: v for k, v in sd.items() if k.startswith('image_encoder.')}
        try:
            enc.load_state_dict(part, strict=True)
            done['official_strict_load'] = f'ImageEncoder ({a.model}) load_state_dict(strict=True): {len(part)} keys'
        except RuntimeError as e:
            problems.append(f'official ImageEncoder.load_state_dict(strict=True) failed: {e}')

    if problems:
        print(json.dumps({'ok': False, 'problems': problems[:20], **done}))
        sys.exit(1)
    print(json.dumps({'ok': True, **done}))


if __name__ == '__main__':
    main()
