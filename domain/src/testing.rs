//! Given/when/then for aggregate tests: `given(events).when(command).then_events([..])`,
//! `.then_error("code")` or `.then_invalid("field")`. Synchronous and runtime-free, because
//! `decide` and `apply` are.

use std::fmt;

/// What the helper needs from an aggregate; implemented for each one by `impl_aggregate!`.
pub(crate) trait Decider: Default + fmt::Debug {
    type Command: fmt::Debug;
    type Event: cqrs_es::DomainEvent;
    type Error: fmt::Debug + fmt::Display;

    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
    fn apply(&mut self, event: &Self::Event);
    fn code(error: &Self::Error) -> &'static str;
    fn invalid_field(error: &Self::Error) -> Option<&'static str>;
}

/// An aggregate rebuilt from past events.
pub(crate) struct Given<A> {
    state: A,
}

/// Folds `events` into a fresh aggregate.
pub(crate) fn given<A: Decider>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let mut state = A::default();
    for event in events {
        state.apply(&event);
    }
    Given { state }
}

impl<A: Decider> Given<A> {
    /// Decides `command` against the state.
    pub(crate) fn when(self, command: A::Command) -> Then<A> {
        let result = self.state.decide(&command);
        Then {
            state: self.state,
            command,
            result,
        }
    }

    /// The state itself, for assertions on the fold.
    pub(crate) fn state(self) -> A {
        self.state
    }
}

/// The outcome of one decision.
pub(crate) struct Then<A: Decider> {
    state: A,
    command: A::Command,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Decider> Then<A> {
    /// Asserts the decision produced exactly `expected`; returns the state with them applied.
    #[track_caller]
    pub(crate) fn then_events(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "events for {:?}", self.command);
                events.iter().for_each(assert_stored_form);
                let mut state = self.state;
                for event in &events {
                    state.apply(event);
                }
                state
            }
            Err(error) => panic!(
                "expected events for {:?}, got error {} ({error})",
                self.command,
                A::code(&error)
            ),
        }
    }

    /// Asserts the decision was accepted but changed nothing.
    #[track_caller]
    pub(crate) fn then_nothing(self) -> A {
        self.then_events([])
    }

    /// Asserts the decision was refused with `code`; returns the error for further checks.
    #[track_caller]
    pub(crate) fn then_error(self, code: &str) -> A::Error {
        match self.result {
            Ok(events) => panic!(
                "expected error {code} for {:?}, got events {events:?}",
                self.command
            ),
            Err(error) => {
                assert_eq!(
                    A::code(&error),
                    code,
                    "error for {:?}: {error}",
                    self.command
                );
                error
            }
        }
    }

    /// Asserts the decision was refused as `invalid_input` naming `field`.
    #[track_caller]
    pub(crate) fn then_invalid(self, field: &str) {
        let error = self.then_error("invalid_input");
        assert_eq!(
            A::invalid_field(&error),
            Some(field),
            "the field of {error}"
        );
    }
}

/// Every event a test sees must serialize as `{"type": <event_type>, "data": {…}}` and read back
/// unchanged, so a type string can never drift from the variant it names.
#[track_caller]
fn assert_stored_form<E: cqrs_es::DomainEvent>(event: &E) {
    let json = serde_json::to_value(event).expect("events serialize");
    assert_eq!(
        json["type"],
        event.event_type().as_str(),
        "type of {event:?}"
    );
    assert!(json["data"].is_object(), "data of {event:?}");
    assert_eq!(
        event.event_version(),
        crate::versions::current(&event.event_type()),
        "version of {event:?}"
    );
    let back: E = serde_json::from_value(json).expect("events deserialize");
    assert_eq!(&back, event);
}
