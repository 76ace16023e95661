import json, math
from pathlib import Path
import numpy as np
from scipy.stats import spearmanr, rankdata
import importlib.util
import types
an = types.ModuleType("an")  # analyse.py's definitions (its first 37 lines; the rest is its report)
exec("\n".join(Path(__file__).with_name("analyse.py").read_text().splitlines()[:37]), an.__dict__)
rng = np.random.default_rng(1)
def z(v):
    s = v.std()
    return (v - v.mean()) / s if s > 0 else v * 0
res = {}
for f in sorted(an.OUT.glob("*.json")):
    cands = json.loads(f.read_text())
    if len(cands) < 8: continue
    N = len(cands[0]["items"])
    sig = [[an.item_signals(it) for it in c["items"]] for c in cands]
    acc = np.array([c["items96"] for c in cands], float)
    for lname in ("top_frac", "L_all", "L_ja"):
        for kl in (8, 16, 32):
            for ka in (0, 2, 3, 4, 6, 8):
                for w in (0.5, 1.0, 2.0):
                    rs, top = [], []
                    for _ in range(300):
                        Sl = rng.choice(N, kl, replace=False); Sa = Sl[:ka] if ka <= kl else rng.choice(N, ka, replace=False)
                        rest = np.setdiff1d(np.arange(96), Sa)
                        L = np.array([sum(sig[c][i][lname] for i in Sl) for c in range(len(cands))])
                        A = acc[:, Sa].sum(1) if ka else np.zeros(len(cands))
                        v = z(L) + w * z(A) if ka else L
                        t = acc[:, rest].mean(1)
                        r = spearmanr(v, t).correlation; rs.append(0.0 if np.isnan(r) else r)
                        # the top-4 chosen by v: their mean true rank (share of the true top-4 captured)
                        top.append(len(set(np.argsort(-v, kind="stable")[:4]) & set(np.argsort(-t, kind="stable")[:4])) / 4)
                    res.setdefault((lname, kl, ka, w), []).append((np.mean(rs), np.mean(top)))
                    if ka == 0: break
rows = sorted(res.items(), key=lambda kv: -np.mean([x[0] for x in kv[1]]))
for (l, kl, ka, w), v in rows[:40]:
    print(f"{l:9s} kl={kl:2d} ka={ka} w={w}: rho " + " ".join(f"{x[0]:+.2f}" for x in v) + f" mean {np.mean([x[0] for x in v]):+.3f}  top4 {np.mean([x[1] for x in v]):.2f}")
print("acc only:")
for f in sorted(an.OUT.glob("*.json")):
    pass
