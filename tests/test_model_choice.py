"""The widget's model holder: a load (which may download gigabytes) runs on a worker and
never makes the GUI thread wait."""

from __future__ import annotations

import subprocess
import sys
import threading

from napari_sam.model_choice import ModelChoice, ModelHolder


class _Loaded:
    warn_on_fallback = True


def test_the_gui_never_waits_for_a_model_that_is_loading():
    release = threading.Event()
    started = threading.Event()

    def slow(_device, _precision):
        started.set()
        release.wait(60)  # a download in progress
        return _Loaded()

    holder = ModelHolder()
    holder.choose(ModelChoice("slow", loader=slow, key="slow"))
    worker = threading.Thread(target=holder.predictor)
    worker.start()
    assert started.wait(30)
    answered = []
    gui = threading.Thread(target=lambda: answered.append(
        (holder.cached(), holder.choose(ModelChoice("other", loader=slow, key="o")))))
    gui.start()
    gui.join(10)  # the GUI thread's calls return while the load still runs
    loading = worker.is_alive()
    release.set()
    worker.join(60)
    assert loading and answered == [(None, True)]


def test_a_loaded_predictor_leaves_fallback_reports_to_the_widget():
    holder = ModelHolder()
    holder.choose(ModelChoice("stub", loader=lambda d, p: _Loaded(), key="stub"))
    predictor = holder.predictor()
    assert holder.cached() is predictor and predictor.warn_on_fallback is False
    assert holder.predictor() is predictor  # loaded once


def test_the_widget_parts_without_qt_import_no_qt():
    code = ("import sys, napari_sam.model_choice, napari_sam.layer_embeddings, "
            "napari_sam.stack_prompting, napari_sam.panel_contract, napari_sam.jobs, "
            "napari_sam.layer_binding; print('qtpy' in sys.modules or 'PyQt6' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_adapted_predictor_is_served_until_revert_or_another_choice():
    holder = ModelHolder()
    stub = ModelChoice("stub", loader=lambda d, p: _Loaded(), key="stub")
    holder.choose(stub)
    base, adapted, again = holder.predictor(), _Loaded(), _Loaded()
    assert not holder.use_adapted(adapted, again)  # not adapted from the model in use
    assert holder.use_adapted(base, adapted) and holder.adapted
    assert holder.predictor() is adapted and holder.cached() is adapted
    assert holder.use_adapted(adapted, again)  # adapted further: back still goes to base
    assert holder.revert() is base and holder.predictor() is base and not holder.adapted
    assert holder.revert() is None
    holder.use_adapted(base, adapted)
    holder.choose(ModelChoice("other", loader=lambda d, p: _Loaded(), key="other"))
    assert holder.predictor() is not adapted and not holder.adapted
    holder.choose(stub)  # back to the first choice: its own model, not the adapted one
    assert holder.predictor() is not adapted and not holder.adapted
