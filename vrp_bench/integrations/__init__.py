"""Integrations: VRP-Bench inside other harnesses. Nothing in VRP-Bench's core imports this package.

``lmms_eval_manifests`` (cheap: what lmms-eval's ``lmms_eval.models`` entry points load) and ``lmms_eval_models``
(the adapter: every registered VRP model as an lmms-eval model named ``vrp_<name>``) are the only modules of
VRP-Bench that import lmms-eval.
"""
