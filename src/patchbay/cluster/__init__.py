"""Cluster mode: several ``patchbay serve`` replicas behind a load balancer acting as one hub.

Shared state lives in Redis (a trusted engine; nothing home-made): the config of record
(``configstore``), which replica holds which dial-in agent and the replicas' heartbeats (``registry``),
and calls forwarded to the replica that holds an agent (``forward``); ``node`` ties them to a hub.
``settings`` reads the ``--cluster`` URL without importing Redis, so a hub outside cluster mode never does.
"""
