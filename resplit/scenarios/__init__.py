"""Scenario files, as YAML validated with pydantic: a bad file fails with the file,
the field and the reason before anything runs.

* :mod:`.loading`: what every scenario file shares: reading YAML into a mapping,
  ``--set`` overrides, validation errors turned into :class:`~.loading.ScenarioError`;
* :mod:`.plan`: the scenario ``resplit plan solve`` hands the splitter (a model,
  nodes, links, a policy and a workload) and the ``Problem`` proto made from it;
* :mod:`.testbed`: the scenario ``resplit testbed run`` plays on emulated nodes
  (nodes, shaped links and their changes, background load, a workload, the control loop).
"""
