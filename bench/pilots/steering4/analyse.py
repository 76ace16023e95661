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
    N = len(cands[0]["items"])
    sig = [[item_signals(it) for it in c["items"]] for c in cands]
    names = list(sig[0][0])
    acc_items = np.array([[c["items96"][str(i)] if isinstance(c["items96"], dict) else c["items96"][i] for i in range(96)] for c in cands], float)
    for name in names + ["ACC"]:
        for k in (4, 8, 16, 32):
            rs = []
            for _ in range(300):
                S = rng.choice(N, k, replace=False)
                rest = np.setdiff1d(np.arange(96), S)
                if name == "ACC":
                    v = acc_items[:, S].sum(1)
                else:
                    v = np.array([sum(sig[c][i][name] for i in S) for c in range(len(cands))])
                target = acc_items[:, rest].mean(1)
                r = spearmanr(v, target).correlation
                rs.append(0.0 if np.isnan(r) else r)
            table.setdefault((name, k), {})[f.stem] = float(np.mean(rs))
stems = sorted({s for v in table.values() for s in v})
print("signal k " + " ".join(stems) + " mean")
for (name, k), v in sorted(table.items(), key=lambda kv: (kv[0][1], -np.mean(list(kv[1].values())))):
    vals = [v.get(s, float('nan')) for s in stems]
    print(f"{name:18s} {k:2d} " + " ".join(f"{x:+.2f}" for x in vals) + f"  {np.nanmean(vals):+.3f}")
