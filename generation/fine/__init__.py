"""Fine stage: foreground (mask + text_nd) and background (tissue map + text_bg) ControlNet
branches on the frozen coarse model. `model` (branches + fusion, save/load), `pipeline`
(inference), `conditions`, `data`, `config`, `train`, `validation`, `cli`."""
