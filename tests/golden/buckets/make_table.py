"""Runs SimpleTuner's MultiaspectImage size functions (simpletuner/helpers/multiaspect/image.py at
bc8e6ab7) with stubs for its imports, and prints (source, resolution, type, alignment) -> target."""
import json, math, sys, types

np = types.ModuleType("numpy")
np.float64 = float
np.ndarray = type("ndarray", (), {})
np.isclose = lambda a, b, rtol=1e-5: abs(a - b) <= rtol * abs(b)
sys.modules["numpy"] = np
pil = types.ModuleType("PIL"); pil.Image = types.ModuleType("PIL.Image"); pil.Image.Image = type("Image", (), {})
sys.modules["PIL"] = pil; sys.modules["PIL.Image"] = pil.Image
tv = types.ModuleType("torchvision"); tv.transforms = types.ModuleType("torchvision.transforms")
sys.modules["torchvision"] = tv; sys.modules["torchvision.transforms"] = tv.transforms

class Args: aspect_bucket_alignment = 32; aspect_bucket_rounding = 2
class StateTracker:
    memo = {}
    @staticmethod
    def get_args(): return Args
    @staticmethod
    def get_resolution_by_aspect(dataloader_resolution, aspect): return StateTracker.memo.get((dataloader_resolution, aspect))
    @staticmethod
    def set_resolution_by_aspect(dataloader_resolution, aspect, resolution): StateTracker.memo[(dataloader_resolution, aspect)] = resolution
st_mod = types.ModuleType("simpletuner.helpers.training.state_tracker"); st_mod.StateTracker = StateTracker
for name in ["simpletuner", "simpletuner.helpers", "simpletuner.helpers.training"]:
    sys.modules[name] = types.ModuleType(name)
sys.modules["simpletuner.helpers.training.state_tracker"] = st_mod
src = open("image.py").read()
ns = {"__name__": "image"}
exec(compile(src, "image.py", "exec"), ns)
M = ns["MultiaspectImage"]

sources = [(1920, 1080), (1280, 720), (854, 480), (640, 360), (720, 576), (1024, 576), (640, 480), (480, 640),
           (1080, 1920), (512, 512), (1000, 1000), (2048, 858), (1440, 1080), (720, 480), (320, 240), (960, 544)]
rows = []
for align in (32, 64, 16):
    Args.aspect_bucket_alignment = align
    for res, rtype in ((480, "pixel_area"), (720, "pixel_area"), (256, "pixel_area"), (480, "pixel"), (0.5, "area")):
        StateTracker.memo = {}  # one dataset, files in this order
        for w, h in sources:
            ar = M.calculate_image_aspect_ratio((w, h))
            if rtype == "pixel":
                target, inter, _ = M.calculate_new_size_by_pixel_edge(ar, int(res), (w, h))
            else:
                mp = res * res / 1e6 if rtype == "pixel_area" else res
                target, inter, _ = M.calculate_new_size_by_pixel_area(ar, mp, (w, h))
            rows.append({"source": [w, h], "resolution": res, "resolution_type": rtype, "alignment": align,
                         "target": list(target)})
# Files whose computed targets round to one aspect but differ in size: SimpleTuner's per-aspect memo
# gives the later ones the first one's size (one dataset per group, files in this order).
memo_sources = [(100, 480), (100, 500), (107, 576), (100, 720), (107, 720), (114, 1080), (100, 1024),
                (121, 1024), (100, 768), (128, 720), (100, 576), (128, 1080), (480, 100), (500, 100),
                (720, 100), (720, 107), (1024, 100), (1080, 114)]
for align, res in ((32, 480), (16, 480), (16, 576), (64, 1024)):
    Args.aspect_bucket_alignment = align
    StateTracker.memo = {}
    for w, h in memo_sources:
        ar = M.calculate_image_aspect_ratio((w, h))
        target, inter, _ = M.calculate_new_size_by_pixel_area(ar, res * res / 1e6, (w, h))
        rows.append({"source": [w, h], "resolution": res, "resolution_type": "pixel_area", "alignment": align,
                     "target": list(target)})
print(json.dumps({"generator": "tests/golden/buckets/make_table.py",
                  "simpletuner": "bc8e6ab7738ce457a2ed8eb2d26cadd91c6442cb simpletuner/helpers/multiaspect/image.py",
                  "rows": rows}, indent=None))
