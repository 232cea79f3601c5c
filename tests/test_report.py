import itertools

import optuna
from optuna.distributions import CategoricalDistribution

from search.ranking import dominates, non_dominated, pareto_fronts
from search.report import render_html, write_report
from search.results import failed_rows, pareto_rows, trial_rows


def add(study, number, accuracy, speedup, description="cfg", **attrs):
    study.add_trial(
        optuna.trial.create_trial(
            values=[accuracy, speedup],
            params={"mode": "dynamic"},
            distributions={"mode": CategoricalDistribution(["dynamic", "static"])},
            user_attrs={
                "config_key": f"k{number}",
                "description": description,
                "config": {"mode": "dynamic"},
                "speedup_low": speedup * 0.98,
                "speedup_high": speedup * 1.02,
                **attrs,
            },
        )
    )


def synthetic_study():
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_user_attr("fp32_accuracy", 0.81)
    study.set_user_attr("space_text", "[quantization]\nmode = ['dynamic']")
    points = [
        (0.81, 1.1),
        (0.80, 2.0),
        (0.79, 2.5),
        (0.805, 1.5),
        (0.70, 2.4),
        (0.5, 3.0),
        (0.80, 1.9),
        (0.79, 2.5),
    ]
    for i, (a, s) in enumerate(points):
        add(study, i, a, s, description=f"config {i}")
    return study, points


def brute_force_front(points):
    return {
        i
        for i, p in enumerate(points)
        if not any(dominates(q, p) for j, q in enumerate(points) if j != i)
    }


def test_pareto_rows_are_exactly_the_non_dominated_trials():
    study, points = synthetic_study()
    rows = pareto_rows(study)
    assert set(rows["trial"]) == brute_force_front(points) == {0, 1, 2, 3, 5, 7}
    assert list(rows["speedup"]) == sorted(rows["speedup"], reverse=True)


def test_pareto_fronts_on_random_points_match_brute_force():
    import random

    rng = random.Random(3)
    for _ in range(20):
        pts = [(rng.choice([0.7, 0.75, 0.8]), rng.choice([1.0, 1.5, 2.0, 2.5])) for _ in range(12)]
        assert set(non_dominated(pts)) == brute_force_front(pts)
        fronts = pareto_fronts(pts)
        for i, j in itertools.permutations(range(len(pts)), 2):
            if dominates(pts[i], pts[j]):
                assert fronts[i] < fronts[j]


def test_duplicates_are_left_out_of_the_tables():
    study, _ = synthetic_study()
    add(study, 99, 0.80, 2.0, duplicate_of=1)
    assert 8 not in set(trial_rows(study)["trial"])


def test_report_holds_every_frontier_trial_escapes_strings_and_embeds_plotly(tmp_path):
    study, _ = synthetic_study()
    add(study, 50, 0.81, 1.05, description="<script>alert('x')</script>")
    trial = study.ask()
    trial.set_user_attr("description", "static <b>bad</b>")
    trial.set_user_attr("fail_reason", "RuntimeException: <oops>")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    page = render_html(study)
    for number in pareto_rows(study)["trial"]:
        assert f"<td>{number}</td>" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert "RuntimeException: &lt;oops&gt;" in page
    assert "Plotly.newPlot" in page or "plotly" in page.lower()
    assert len(page) > 1_000_000  # plotly.js embedded: opens offline
    assert list(failed_rows(study)["trial"]) == [trial.number]
    path = write_report(study, tmp_path / "r" / "study.html")
    assert path.read_text() == page
    assert [p.name for p in path.parent.iterdir()] == ["study.html"]  # no temp file left


def test_beam_order_ranks_accurate_configs_by_speed_then_the_rest_by_front():
    from search.ranking import beam_order

    fp32 = 0.80
    points = [
        (0.805, 1.2),  # 0 accurate, slow (on the front only by noise-level accuracy)
        (0.795, 2.0),  # 1 accurate, fastest accurate
        (0.792, 1.5),  # 2 accurate
        (0.60, 3.0),  # 3 collapsed but fastest: front 0 among the rest
        (0.75, 2.2),  # 4 inaccurate, front 0 among the rest
        (0.70, 2.1),  # 5 dominated by 4
    ]
    assert beam_order(points, fp32, max_drop=0.01) == [1, 2, 0, 3, 4, 5]


def test_beam_order_breaks_ties_of_overlapping_speedups_by_accuracy():
    from search.ranking import beam_order

    points = [(0.795, 2.00), (0.805, 1.97), (0.80, 1.50)]
    intervals = [(1.95, 2.05), (1.92, 2.02), (1.45, 1.55)]
    assert beam_order(points, 0.80, 0.01) == [0, 1, 2]  # without intervals: by speed
    assert beam_order(points, 0.80, 0.01, intervals) == [1, 0, 2]  # a tie: accuracy decides


def test_report_splits_trials_by_worker_cpu():
    from search.report import _scatter

    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_user_attr("fp32_accuracy", 0.81)
    avx2 = {"host": "a", "cpu": "EPYC", "isa": ["avx2"], "cores": 2}
    vnni = {"host": "b", "cpu": "Xeon", "isa": ["avx2", "avx512_vnni"], "cores": 16}
    for i, worker in enumerate([avx2, avx2, vnni]):
        add(study, i, 0.80, 1.5 + i, worker=worker)
    rows = trial_rows(study)
    names = sorted(trace.name for trace in _scatter(study, rows, pareto_rows(study)).data)
    assert [n for n in names if "trials" in n] == [
        "dynamic trials on EPYC (avx2), 2 cores",
        "dynamic trials on Xeon (avx2, avx512_vnni), 16 cores",
    ]
    page = render_html(study)
    assert "<td>Xeon</td>" in page and "<td>avx2, avx512_vnni</td>" in page
