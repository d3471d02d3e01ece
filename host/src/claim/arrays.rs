//! One-dimensional PostgreSQL arrays read straight from their binary form, a column of
//! a result at a time: how the host reads a locked claim's tasks, which come as one row
//! of arrays (see `TaskArrays` in rows.rs).

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Row, ValueRef};
use uuid::Uuid;

use crate::task::RowAt;

/// PostgreSQL's type oids for the elements read here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Element {
    Bytea = 17,
    Int8 = 20,
    Int4 = 23,
    Text = 25,
    Tid = 27,
    Timestamptz = 1184,
    Uuid = 2950,
}

/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The elements of one array column, each a slice of the row's bytes (`None` for NULL).
pub struct Array<'r> {
    name: &'static str,
    elements: Vec<Option<&'r [u8]>>,
}

impl<'r> Array<'r> {
    /// The array in column `name` of `row`, whose elements must be of type `element`. A
    /// NULL array (an aggregate over no rows) reads as empty.
    pub fn of(row: &'r PgRow, name: &'static str, element: Element) -> Result<Self, sqlx::Error> {
        let raw = row.try_get_raw(name)?;
        if raw.is_null() {
            return Ok(Array {
                name,
                elements: Vec::new(),
            });
        }
        let bytes = raw
            .as_bytes()
            .map_err(|source| decode(name, source.to_string()))?;
        parse(bytes, element)
            .map(|elements| Array { name, elements })
            .map_err(|problem| decode(name, problem))
    }

    /// The column it was read from.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// How many elements it has.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    fn fixed<const N: usize>(&self, i: usize) -> Result<Option<[u8; N]>, sqlx::Error> {
        self.elements[i]
            .map(|bytes| {
                bytes
                    .try_into()
                    .map_err(|_| decode(self.name, format!("an element of {} bytes", bytes.len())))
            })
            .transpose()
    }

    fn required<T>(&self, value: Option<T>) -> Result<T, sqlx::Error> {
        value.ok_or_else(|| decode(self.name, "a NULL element".into()))
    }

    pub fn i64(&self, i: usize) -> Result<i64, sqlx::Error> {
        self.required(self.fixed(i)?.map(i64::from_be_bytes))
    }

    pub fn i32(&self, i: usize) -> Result<i32, sqlx::Error> {
        self.required(self.fixed(i)?.map(i32::from_be_bytes))
    }

    pub fn string(&self, i: usize) -> Result<String, sqlx::Error> {
        let bytes = self.required(self.elements[i])?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|err| decode(self.name, err.to_string()))
    }

    pub fn bytes(&self, i: usize) -> Result<Vec<u8>, sqlx::Error> {
        self.required(self.elements[i]).map(<[u8]>::to_vec)
    }

    pub fn optional_bytes(&self, i: usize) -> Option<Vec<u8>> {
        self.elements[i].map(<[u8]>::to_vec)
    }

    pub fn time(&self, i: usize) -> Result<DateTime<Utc>, sqlx::Error> {
        let micros = self.required(self.fixed(i)?.map(i64::from_be_bytes))?;
        micros
            .checked_add(PG_EPOCH_MICROS)
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(|| decode(self.name, format!("a time out of range ({micros} µs)")))
    }

    pub fn optional_uuid(&self, i: usize) -> Result<Option<Uuid>, sqlx::Error> {
        Ok(self.fixed(i)?.map(Uuid::from_bytes))
    }

    pub fn row_at(&self, i: usize) -> Result<RowAt, sqlx::Error> {
        self.required(self.fixed(i)?.map(RowAt::from_bytes))
    }
}

fn decode(name: &str, problem: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: format!("{name:?}"),
        source: problem.into(),
    }
}

/// The elements of a binary array: its dimensions, a flag, the element type, a length
/// and lower bound per dimension, then each element as its length (-1 for NULL) and bytes.
fn parse(bytes: &[u8], element: Element) -> Result<Vec<Option<&[u8]>>, String> {
    let mut reader = Reader { bytes, at: 0 };
    let dimensions = reader.int()?;
    let _has_nulls = reader.int()?;
    let oid = reader.int()? as u32;
    if oid != element as u32 {
        return Err(format!(
            "an array of type oid {oid} where {element:?} (oid {}) was expected",
            element as u32
        ));
    }
    let len = match dimensions {
        0 => return Ok(Vec::new()),
        1 => reader.int()?,
        n => return Err(format!("an array of {n} dimensions")),
    };
    let _lower_bound = reader.int()?;
    let mut elements = Vec::with_capacity(len.max(0) as usize);
    for _ in 0..len {
        elements.push(match reader.int()? {
            size if size < 0 => None,
            size => Some(reader.take(size as usize)?),
        });
    }
    Ok(elements)
}

struct Reader<'r> {
    bytes: &'r [u8],
    at: usize,
}

impl<'r> Reader<'r> {
    fn take(&mut self, len: usize) -> Result<&'r [u8], String> {
        let taken = self
            .bytes
            .get(self.at..self.at + len)
            .ok_or_else(|| "a truncated array".to_owned())?;
        self.at += len;
        Ok(taken)
    }

    fn int(&mut self) -> Result<i32, String> {
        let word = self.take(4)?;
        Ok(i32::from_be_bytes(word.try_into().expect("four bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-dimensional binary array of `oid` holding `elements`.
    fn array(oid: u32, elements: &[Option<&[u8]>]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [1, 1, oid as i32, elements.len() as i32, 1] {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        for element in elements {
            match element {
                Some(data) => {
                    bytes.extend_from_slice(&(data.len() as i32).to_be_bytes());
                    bytes.extend_from_slice(data);
                }
                None => bytes.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        bytes
    }

    #[test]
    fn elements_come_back_in_order_with_their_nulls() {
        let seven = 7i64.to_be_bytes();
        let bytes = array(20, &[Some(&seven), None]);
        let elements = parse(&bytes, Element::Int8).unwrap();
        assert_eq!(elements, [Some(&seven[..]), None]);
        let empty = [0i32, 0, 20]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect::<Vec<_>>();
        assert!(parse(&empty, Element::Int8).unwrap().is_empty());
    }

    #[test]
    fn an_array_of_another_type_or_cut_short_is_refused() {
        let bytes = array(25, &[Some(b"a")]);
        let wrong = parse(&bytes, Element::Int8).unwrap_err();
        assert!(
            wrong.contains("oid 25") && wrong.contains("Int8"),
            "{wrong}"
        );
        let cut = parse(&bytes[..bytes.len() - 1], Element::Text).unwrap_err();
        assert!(cut.contains("truncated"), "{cut}");
    }
}
