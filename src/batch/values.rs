//! `IntoValues`: the values of a batch operation, from tuples, arrays, slices or vectors.

use rusqlite::types::{ToSqlOutput, Value};
use rusqlite::ToSql;

use crate::error::{Error, Result};
/// The values of one operation: tuples, arrays and slices of [`ToSql`] values, or a
/// `Vec<Value>` (moved without conversion).
///
/// ```
/// # use strata::batch::IntoValues;
/// let values = ("ada@example.com", "Ada", 0).into_values().unwrap();
/// assert_eq!(values.len(), 3);
/// ```
pub trait IntoValues {
    /// Converts into owned SQLite values.
    fn into_values(self) -> Result<Vec<Value>>;
}

/// Converts one bound value; borrowed text and blobs are copied, as the batch outlives them.
pub(super) fn to_value(value: &dyn ToSql) -> Result<Value> {
    match value.to_sql()? {
        ToSqlOutput::Owned(v) => Ok(v),
        ToSqlOutput::Borrowed(r) => Value::try_from(r).map_err(|e| Error::closure(e.to_string())),
        other => Err(Error::closure(format!(
            "value {other:?} cannot be stored in a batch"
        ))),
    }
}

impl IntoValues for Vec<Value> {
    fn into_values(self) -> Result<Vec<Value>> {
        Ok(self)
    }
}

impl<T: ToSql> IntoValues for &[T] {
    fn into_values(self) -> Result<Vec<Value>> {
        self.iter().map(|v| to_value(v)).collect()
    }
}

impl<T: ToSql, const N: usize> IntoValues for [T; N] {
    fn into_values(self) -> Result<Vec<Value>> {
        self.as_slice().into_values()
    }
}

impl IntoValues for () {
    fn into_values(self) -> Result<Vec<Value>> {
        Ok(Vec::new())
    }
}

macro_rules! tuple_into_values {
    ($($name:ident)+) => {
        impl<$($name: ToSql),+> IntoValues for ($($name,)+) {
            #[allow(non_snake_case)]
            fn into_values(self) -> Result<Vec<Value>> {
                let ($($name,)+) = self;
                Ok(vec![$(to_value(&$name)?),+])
            }
        }
    };
}
tuple_into_values!(A);
tuple_into_values!(A B);
tuple_into_values!(A B C);
tuple_into_values!(A B C D);
tuple_into_values!(A B C D E);
tuple_into_values!(A B C D E F);
tuple_into_values!(A B C D E F G);
tuple_into_values!(A B C D E F G H);
tuple_into_values!(A B C D E F G H I);
tuple_into_values!(A B C D E F G H I J);
tuple_into_values!(A B C D E F G H I J K);
tuple_into_values!(A B C D E F G H I J K L);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rusqlite::types::ValueRef;

    #[test]
    fn tuples_arrays_and_slices_convert() -> Result<()> {
        let name = String::from("Ada");
        assert_eq!(
            ("a@x", &name, 7_i64, None::<i64>, 1.5).into_values()?,
            [
                Value::Text("a@x".into()),
                Value::Text("Ada".into()),
                Value::Integer(7),
                Value::Null,
                Value::Real(1.5)
            ]
        );
        assert_eq!(
            [1, 2].into_values()?,
            [Value::Integer(1), Value::Integer(2)]
        );
        let params: &[&dyn ToSql] = rusqlite::params!["x", 3];
        assert_eq!(params.into_values()?.len(), 2);
        assert_eq!(vec![Value::Null].into_values()?, [Value::Null]);
        assert!(().into_values()?.is_empty());
        Ok(())
    }

    /// Text that is not UTF-8, which a `Value` cannot hold.
    pub(crate) struct BadText;

    impl ToSql for BadText {
        fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
            Ok(ToSqlOutput::Borrowed(ValueRef::Text(&[0xff, 0xfe])))
        }
    }

    #[test]
    fn unconvertible_values_are_errors() {
        assert!((BadText,).into_values().is_err());
    }
}
