pub(crate) const SCENARIOS: &[super::Scenario] = &[];
