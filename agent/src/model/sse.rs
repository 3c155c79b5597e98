//! An incremental parser for `text/event-stream` bodies as providers send them: fields per line,
//! a blank line ends a frame, `:` lines are comments, CRLF or LF.

/// One dispatched SSE frame.
#[derive(Debug, Default, PartialEq)]
pub struct Frame {
    /// The `event:` name, if any.
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// The longest line accepted; a provider that never sends a newline is broken, not patient.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// Bytes in, frames out.
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

/// A line longer than 16 MiB.
#[derive(Debug)]
pub struct LineTooLong;

impl SseParser {
    /// Feeds bytes; returns the frames they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, LineTooLong> {
        let mut frames = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if let Some(frame) = self.line_done(&String::from_utf8_lossy(&line)) {
                    frames.push(frame);
                }
            } else {
                self.line.push(byte);
                if self.line.len() > MAX_LINE {
                    return Err(LineTooLong);
                }
            }
        }
        Ok(frames)
    }

    /// A frame left unterminated at the end of the body (some servers omit the last blank line).
    pub fn finish(&mut self) -> Option<Frame> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&String::from_utf8_lossy(&line));
        }
        self.dispatch()
    }

    fn line_done(&mut self, line: &str) -> Option<Frame> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<Frame> {
        let event = self.event.take();
        let data = self.data.take()?;
        Some(Frame { event, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_are_reassembled() {
        let body = b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\ndata: [DONE]";
        let mut parser = SseParser::default();
        let mut frames = Vec::new();
        for piece in body.chunks(3) {
            frames.extend(parser.feed(piece).expect("feed"));
        }
        frames.extend(parser.finish());
        assert_eq!(
            frames,
            [
                Frame {
                    event: Some("message_start".into()),
                    data: "{\"a\":1}".into()
                },
                Frame {
                    event: None,
                    data: "x\ny".into()
                },
                Frame {
                    event: None,
                    data: "[DONE]".into()
                },
            ]
        );
    }
}
