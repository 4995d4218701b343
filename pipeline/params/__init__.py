"""The schema of params.yaml, one module per section, so that a stage's code depends only
on the sections it reads (DVC reruns a stage when a module it imports changes).

- `base`: `Strict`, `ParamsError`, shared types, reading YAML and naming the key of an error;
- `data`: sources, splits, shards and publication (`datasets:`);
- `methods`: backbones, methods, the regulator and the views (`runs.<run>.*`);
- `training`: the optimiser, schedule, monitor, loader and the pretraining run;
- `evaluation`: probes, geometry, fine-tuning and transfer targets (`evaluate:`, `transfer:`);
- `report`: `report:`; `ray`: `ray:` (where pretraining runs, not what it computes);
- `schema`: the whole file (`Params`), the checks that span sections, `load_params`.

Only the `params` stage validates the whole file (`schema`); every other stage reads its
own resolved params (pipeline/resolved/).
"""
