"""Microsoft Presidio as a subprocess of bench/pii_quality.py, run by bench/.venv-presidio's Python
(Presidio is not a project dependency, so it never shares the project's environment).

Protocol: stdin holds one JSON string per line (a text) and a first line ``{"model": ...,
"threshold": ...}``; stdout gets one line per text, ``[[start, end, entity, score], ...]``, then a
last line ``{"timing": {...}, "recognizers": [...]}``. Only the analysis loop is timed, not the
loading of spaCy and the recognisers.

Recognisers: Presidio's English defaults, plus its country recognisers for the national IDs the
corpus holds (UK NINO, DE Steuer-ID, ES NIF/NIE, IT codice fiscale) registered for English, since
the tickets are English text that quotes European IDs. Presidio has none for the Dutch BSN or the
French NIR.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_COUNTRY_RECOGNISERS = ("UkNinoRecognizer", "DeTaxIdRecognizer", "EsNifRecognizer", "EsNieRecognizer",
                        "ItFiscalCodeRecognizer")  # fmt: skip


def _offline_tldextract() -> None:
    # Presidio's e-mail recogniser calls tldextract, which would try to download the public suffix
    # list on first use; the snapshot bundled with tldextract is enough.
    import tldextract

    tldextract.extract = tldextract.TLDExtract(suffix_list_urls=())


def _analyzer(model: str):  # type: ignore[no-untyped-def]
    from presidio_analyzer import AnalyzerEngine, predefined_recognizers
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    provider = NlpEngineProvider(
        nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}
    )
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    for name in _COUNTRY_RECOGNISERS:
        cls = getattr(predefined_recognizers, name, None)
        if cls is not None:
            analyzer.registry.add_recognizer(cls(supported_language="en"))
    return analyzer


def main() -> None:
    logging.disable(logging.WARNING)
    _offline_tldextract()
    config = json.loads(sys.stdin.readline())
    texts = [json.loads(line) for line in sys.stdin if line.strip()]
    analyzer = _analyzer(config["model"])
    threshold = float(config["threshold"])
    analyzer.analyze("warm-up: Anna Schmidt, anna@example.com", language="en")
    out = []
    wall, cpu = time.perf_counter(), time.process_time()
    for text in texts:
        results = analyzer.analyze(text, language="en", score_threshold=threshold)
        out.append([[r.start, r.end, r.entity_type, round(r.score, 3)] for r in results])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for spans in out:
        sys.stdout.write(json.dumps(spans) + "\n")
    recognisers = sorted({r.name for r in analyzer.registry.get_recognizers(language="en", all_fields=True)})
    sys.stdout.write(
        json.dumps({"timing": {"wall_s": wall, "cpu_s": cpu}, "recognizers": recognisers}) + "\n"
    )


if __name__ == "__main__":
    main()
