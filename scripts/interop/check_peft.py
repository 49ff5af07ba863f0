#!/usr/bin/env python3
"""PEFT loads what `sam2-lora export` writes onto the official SAM2 image encoder.

    python3 scripts/interop/check_peft.py EXPORT_DIR --base BASE.pt --merged MERGED.pt \\
        --sam2 CHECKOUT [--model nano|tiny]

Builds the official ImageEncoder (from a facebookresearch/sam2 checkout) as `image_encoder` of
a module, loads the base checkpoint's encoder part strictly, then
`PeftModel.from_pretrained(module, EXPORT_DIR)`: every LoRA A/B must arrive in its layer, and
PEFT's `merge_and_unload()` must give the weights `sam2-lora merge` wrote (MERGED.pt) and the
same features. Needs `peft` (not packaged for Debian): a developer check.
Prints one JSON line; exits 1 with the problems otherwise.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_merged import official_encoder, read_safetensors  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('export')
    ap.add_argument('--base', required=True)
    ap.add_argument('--merged', required=True)
    ap.add_argument('--sam2', required=True)
    ap.add_argument('--model', default='nano')
    a = ap.parse_args()
    from peft import PeftModel
    import peft

    if not hasattr(F, 'scaled_dot_product_attention'):  # torch < 2.0: the textbook formula
        def sdpa(q, k, v, **_):
            return torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, -1) @ v
        F.scaled_dot_product_attention = sdpa

    class Sam2Like(nn.Module):
        def __init__(self, enc):
            super().__init__()
            self.image_encoder = enc

    def encoder_part(path):
        sd = torch.load(path, map_location='cpu', weights_only=True)['model']
        return {k[len('image_encoder.'):]: v for k, v in sd.items() if k.startswith('image_encoder.')}

    problems, done = [], {'torch': torch.__version__, 'peft': peft.__version__}
    model = Sam2Like(official_encoder(os.path.abspath(a.sam2), a.model))
    model.image_encoder.load_state_dict(encoder_part(a.base), strict=True)
    model = PeftModel.from_pretrained(model, a.export)
    want = read_safetensors(os.path.join(a.export, 'adapter_model.safetensors'))
    got = 0
    for name, mod in model.named_modules():
        if hasattr(mod, 'lora_A') and 'default' in getattr(mod, 'lora_A', {}):
            for ab in ('A', 'B'):  # module names are the file's keys: base_model.model.<path>
                w = want.get(f'{name}.lora_{ab}.weight')
                p = getattr(mod, f'lora_{ab}')['default'].weight
                if w is None or not torch.equal(p.detach().float(), w.float()):
                    problems.append(f'{name}.lora_{ab}: not loaded as written')
            got += 1
    done['peft_lora_layers_loaded'] = got
    if got * 2 != len(want):
        problems.append(f'{len(want)} tensors in the file, {2 * got} loaded into LoRA layers')
    merged_model = model.merge_and_unload()
    ours = encoder_part(a.merged)
    theirs = merged_model.image_encoder.state_dict()
    worst = 0.0
    for k, v in ours.items():
        scale = max(float(v.abs().max()), 1e-30)
        worst = max(worst, float((theirs[k].float() - v).abs().max()) / scale)
    done['peft_merge_vs_ours_max_rel'] = f'{worst:.2e}'
    if worst > 1e-6:
        problems.append(f'PEFT merge_and_unload differs from ours by {worst:.2e} of max|W|')
    # Features: PEFT's merged encoder against the official encoder loaded with our merged file.
    ref = official_encoder(os.path.abspath(a.sam2), a.model)
    ref.load_state_dict(ours, strict=True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fa = merged_model.image_encoder(x)['backbone_fpn']
        fb = ref(x)['backbone_fpn']
    fw = max(float((p - q).abs().max()) / float(q.abs().max()) for p, q in zip(fa, fb))
    done['features_max_rel'] = f'{fw:.2e}'
    if fw > 1e-5:
        problems.append(f'features differ by {fw:.2e}')
    print(json.dumps({'ok': not problems, **({'problems': problems} if problems else {}), **done}))
    sys.exit(1 if problems else 0)


if __name__ == '__main__':
    main()
