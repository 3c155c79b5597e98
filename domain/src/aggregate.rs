//! The thin `cqrs-es` wrappers around each aggregate's pure `decide` and `apply`.
//!
//! Every aggregate gets the same three impls (`DomainEvent` for its events, `Aggregate` for its
//! state, and the test-only `Decider`), so one macro writes them and no aggregate can drift: the
//! `Aggregate::handle` body is "decide, then write each event to the sink" and nothing else.

/// Implements `cqrs_es::DomainEvent`, `cqrs_es::Aggregate` (and, under test, `testing::Decider`)
/// by delegating to the inherent `event_type`, `event_version`, `decide`, `apply` and `code`;
/// `error` names an enum with an `InvalidInput { field, reason }` variant.
macro_rules! impl_aggregate {
    (
        aggregate: $aggregate:ty,
        type: $type:literal,
        command: $command:ty,
        event: $event:ty,
        error: $error:ident $(,)?
    ) => {
        impl ::cqrs_es::DomainEvent for $event {
            fn event_type(&self) -> String {
                <$event>::event_type(self).to_owned()
            }

            fn event_version(&self) -> String {
                <$event>::event_version(self).to_owned()
            }
        }

        impl ::cqrs_es::Aggregate for $aggregate {
            const TYPE: &'static str = $type;
            type Command = $command;
            type Event = $event;
            type Error = $error;
            type Services = ();

            async fn handle(
                &mut self,
                command: $command,
                _services: &(),
                sink: &::cqrs_es::event_sink::EventSink<Self>,
            ) -> Result<(), $error> {
                for event in <$aggregate>::decide(self, &command)? {
                    sink.write(event, self).await;
                }
                Ok(())
            }

            fn apply(&mut self, event: $event) {
                <$aggregate>::apply(self, &event)
            }
        }

        #[cfg(test)]
        impl $crate::testing::Decider for $aggregate {
            type Command = $command;
            type Event = $event;
            type Error = $error;

            fn decide(&self, command: &$command) -> Result<Vec<$event>, $error> {
                <$aggregate>::decide(self, command)
            }

            fn apply(&mut self, event: &$event) {
                <$aggregate>::apply(self, event)
            }

            fn code(error: &$error) -> &'static str {
                error.code()
            }

            fn invalid_field(error: &$error) -> Option<&'static str> {
                match error {
                    $error::InvalidInput { field, .. } => Some(field),
                    _ => None,
                }
            }
        }
    };
}

pub(crate) use impl_aggregate;
