"""The Python participant SDK: a headless participant that joins a Huizhen room like the
browser client does (``sdk.participant``), and synthetic media for it to publish and check
(``sdk.testmedia``). Used by ``huizhen join``, the load tester, the tests and the benchmarks;
the service itself never imports it."""
