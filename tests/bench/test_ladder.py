"""The full run's ingestion steps offer fixed total rates, whatever the fleet size."""

from bench.suite import INGEST_RATES, MAX_REPORT_HZ, Settings, ingest_ladder


def test_steps_offer_the_listed_rates_then_the_fastest_agents_can_report():
    ladder = ingest_ladder(4000)

    offered = [hz * 4000 for hz in ladder]
    assert offered[:-1] == [r for r in INGEST_RATES if r < 4000 * MAX_REPORT_HZ]
    assert ladder[-1] == MAX_REPORT_HZ


def test_a_small_fleet_starts_at_the_first_rate_it_can_offer():
    assert ingest_ladder(500) == [2.0, 4.0, MAX_REPORT_HZ]
    assert Settings.full(agents=500).ingest_hz == ingest_ladder(500)
