"""The informers' field selectors, as the API server parses them."""

from scheduler.informers import succeeded_of


def test_the_succeeded_pods_selector_names_this_scheduler_escaped():
    assert succeeded_of("phalanx") == "status.phase=Succeeded,spec.schedulerName=phalanx"
    # apimachinery's fields.EscapeValue: backslash first, then comma and equals.
    assert succeeded_of("a,b=c\\") == (
        "status.phase=Succeeded,spec.schedulerName=a\\,b\\=c\\\\")
