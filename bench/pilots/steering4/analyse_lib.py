import json, sys, math
from pathlib import Path
import numpy as np
from scipy.stats import spearmanr
OUT = Path("/tmp/pilot4/signals")

def segs(toks):
    n = len(toks); ascii_end = 0
    while ascii_end < n and all(ord(c) < 128 for c in toks[ascii_end]) and toks[ascii_end] != "":
        ascii_end += 1
    eq = next((j for j in range(ascii_end) if "=" in toks[j]), None)
    result = [j for j in range(eq + 1, ascii_end) if toks[j].strip()] if eq is not None else []
    final = [j for j in range(ascii_end, n) if toks[j].strip().isdigit()]
    arith = list(range(ascii_end)); ja = [j for j in range(ascii_end, n) if j not in final]
    return dict(arith=arith, result=result, final=final, ja=ja, all=list(range(n)))

def item_signals(it):
    lp = np.array(it["lp"]); top = np.array(it["top"]); s = segs(it["toks"])
    out = {}
    for k, idx in s.items():
        out[f"L_{k}"] = lp[idx].sum() if idx else 0.0
    out["P_result"] = math.exp(out["L_result"]); out["P_final"] = math.exp(out["L_final"])
    out["P_res_fin"] = 0.5 * (out["P_result"] + out["P_final"])
    out["top_frac"] = top.mean()
    out["top_prefix"] = (np.cumprod(top).sum()) / len(top)
    out["L_clip3"] = np.maximum(lp, -3).sum()
    out["P_mean"] = np.exp(lp).mean()
    out["L_arith_plus_final"] = out["L_arith"] + out["L_final"]
    out["seg_balanced"] = lp[s["arith"]].mean() + (lp[s["ja"]].mean() if s["ja"] else 0) + (lp[s["final"]].mean() if s["final"] else 0)
    return out

files = sorted(OUT.glob("*.json"))
rng = np.random.default_rng(0)
table = {}
for f in files:
    cands = json.loads(f.read_text())
    if len(cands) < 8: continue
