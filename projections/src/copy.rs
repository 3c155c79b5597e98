//! Rows for PostgreSQL's binary `COPY … FROM STDIN (FORMAT binary)`: the fastest way to land many
//! rows, used by the usage read model for its facts ([`crate::usage`]).
//!
//! The format (PostgreSQL's "Binary Format" of `COPY`): a signature and two 32-bit words, then per
//! row a 16-bit field count and per field a 32-bit length (-1 for NULL) and the value in the
//! type's binary form, then a 16-bit -1.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The `text` type's OID, named in a `text[]`'s binary form.
const TEXT_OID: u32 = 25;

/// Binary `COPY` data being written, row by row.
pub struct CopyRows {
    buf: Vec<u8>,
    /// The length of the header at the start of `buf`, until it is taken (then 0).
    unsent_header: usize,
    fields: u16,
    /// Fields written of the current row.
    written: Option<u16>,
}

impl CopyRows {
    /// An empty body for rows of `fields` columns.
    pub fn new(fields: u16) -> Self {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0u32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0u32.to_be_bytes()); // no header extension
        Self {
            unsent_header: buf.len(),
            buf,
            fields,
            written: None,
        }
    }

    /// Starts a row; its fields follow, in the statement's column order.
    pub fn row(&mut self) -> &mut Self {
        self.check_row();
        self.buf.extend_from_slice(&self.fields.to_be_bytes());
        self.written = Some(0);
        self
    }

    fn field(&mut self, value: &[u8]) -> &mut Self {
        let len = i32::try_from(value.len()).unwrap_or(i32::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(value);
        self.count();
        self
    }

    fn count(&mut self) {
        if let Some(written) = &mut self.written {
            *written += 1;
        }
    }

    /// A NULL.
    pub fn null(&mut self) -> &mut Self {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self.count();
        self
    }

    /// A `uuid`.
    pub fn uuid(&mut self, value: Uuid) -> &mut Self {
        self.field(value.as_bytes())
    }

    /// A `uuid` or NULL.
    pub fn opt_uuid(&mut self, value: Option<Uuid>) -> &mut Self {
        match value {
            Some(value) => self.uuid(value),
            None => self.null(),
        }
    }

    /// A `text`.
    pub fn text(&mut self, value: &str) -> &mut Self {
        self.field(value.as_bytes())
    }

    /// A `text` or NULL.
    pub fn opt_text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    /// An `int8`.
    pub fn int8(&mut self, value: i64) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    /// A `timestamptz`: microseconds since 2000-01-01 UTC, as sqlx encodes one for `INSERT`.
    pub fn timestamptz(&mut self, value: DateTime<Utc>) -> &mut Self {
        let epoch = DateTime::from_timestamp(946_684_800, 0).expect("2000-01-01 is a valid time");
        let micros = (value - epoch).num_microseconds().unwrap_or(i64::MAX);
        self.int8(micros)
    }

    /// A one-dimensional `text[]` without NULLs (`'{}'` when empty).
    pub fn text_array(&mut self, values: &[String]) -> &mut Self {
        let mut body = Vec::with_capacity(20 + values.iter().map(|v| 4 + v.len()).sum::<usize>());
        let dimensions: i32 = if values.is_empty() { 0 } else { 1 };
        body.extend_from_slice(&dimensions.to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes()); // no NULL elements
        body.extend_from_slice(&TEXT_OID.to_be_bytes());
        if !values.is_empty() {
            let len = i32::try_from(values.len()).unwrap_or(i32::MAX);
            body.extend_from_slice(&len.to_be_bytes());
            body.extend_from_slice(&1i32.to_be_bytes()); // lower bound
            for value in values {
                let len = i32::try_from(value.len()).unwrap_or(i32::MAX);
                body.extend_from_slice(&len.to_be_bytes());
                body.extend_from_slice(value.as_bytes());
            }
        }
        self.field(&body)
    }

    fn check_row(&self) {
        if let Some(written) = self.written {
            debug_assert_eq!(written, self.fields, "a COPY row has every field");
        }
    }

    /// Whether nothing is waiting to be sent: no row since the last [`CopyRows::take`] (or,
    /// before the first, none at all).
    pub fn is_empty(&self) -> bool {
        self.buf.len() == self.unsent_header
    }

    /// The body so far, to send while more rows are written (between rows only): the first
    /// take starts with the header, and [`CopyRows::finish`] ends with the trailer.
    pub fn take(&mut self) -> Vec<u8> {
        self.check_row();
        self.unsent_header = 0;
        let capacity = self.buf.capacity();
        std::mem::replace(&mut self.buf, Vec::with_capacity(capacity))
    }

    /// The rest of the body, trailer included.
    pub fn finish(mut self) -> Vec<u8> {
        self.check_row();
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}
