//! Column shapes shared by several exports: chat messages (`list<struct{role, content}>`), the
//! shape TRL's conversational datasets and verl's `prompt` use; and [`export_columns!`], which
//! declares an export's columns in one list.

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, ListBuilder, PrimitiveBuilder, StringBuilder, StructBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, ArrowPrimitiveType};
use arrow_schema::{DataType, Field, Fields};
use std::sync::Arc;

/// Declares the columns of an export once: the struct of Arrow builders, the schema
/// (`schema()`) and the finished record batch (`finish()`) are all generated from the one list,
/// in its order, so the three cannot disagree (they used to be written out three times).
///
/// ```ignore
/// export_columns! {
///     /// Builders of the `x` columns.
///     pub struct XColumns;
///     capacity rows;
///     /// Doc of the column.
///     task_id: StringBuilder = text_builder(rows) => DataType::Utf8, REQUIRED;
/// }
/// ```
///
/// Each entry is `name: builder type = constructor => Arrow data type, nullable;`; the
/// constructor sees the row capacity under the name given after `capacity`. The column is named
/// after its field. A builder whose type does not match its data type fails `finish()` in every
/// test that writes a row.
macro_rules! export_columns {
    (
        $(#[$struct_meta:meta])*
        $vis:vis struct $columns:ident;
        capacity $capacity:ident;
        $(
            $(#[$column_meta:meta])*
            $name:ident: $builder:ty = $new:expr => $data_type:expr, $nullable:expr;
        )+
    ) => {
        $(#[$struct_meta])*
        $vis struct $columns {
            $(
                $(#[$column_meta])*
                pub $name: $builder,
            )+
        }

        impl $columns {
            /// Empty builders with room for this many rows.
            pub fn with_capacity($capacity: usize) -> Self {
                $columns { $($name: $new,)+ }
            }

            /// Empty builders with room for this many rows and, for text, for as many bytes
            /// as each column of `previous` (an earlier batch of these columns) held plus a
            /// quarter: a batch is much like the one before, and a text buffer that grows by
            /// doubling copies all of its bytes each time (a sixth of the row building of a
            /// trajectory export, measured).
            // Only the step exports size a batch by the one before (records go to several
            // groups at once).
            #[allow(dead_code)]
            pub fn presized($capacity: usize, previous: &::arrow_array::RecordBatch) -> Self {
                let mut columns = previous.columns().iter();
                // Fields are evaluated in the order written, which is the columns' order.
                $columns {
                    $($name: $crate::export::columns::Presize::presized(
                        $new,
                        $capacity,
                        columns.next(),
                    ),)+
                }
            }

            /// The Arrow schema: one field per builder, in declaration order.
            pub fn schema() -> ::arrow_schema::SchemaRef {
                ::std::sync::Arc::new(::arrow_schema::Schema::new(vec![
                    $(::arrow_schema::Field::new(stringify!($name), $data_type, $nullable),)+
                ]))
            }

            /// The rows appended so far as one record batch.
            pub fn finish(mut self) -> ::arrow_array::RecordBatch {
                let columns: Vec<::arrow_array::ArrayRef> = vec![
                    $(::arrow_array::builder::ArrayBuilder::finish(&mut self.$name),)+
                ];
                // Builders and fields come from the same list; a row appended to some columns
                // but not others, or a builder of the wrong type, is a bug in the caller,
                // caught by every test that writes a row of this export.
                ::arrow_array::RecordBatch::try_new(Self::schema(), columns)
                    .expect(concat!(stringify!($columns), " match their schema"))
            }
        }
    };
}
pub(crate) use export_columns;

/// A builder that can make room for the data of an earlier column of its kind.
pub trait Presize: Sized {
    /// `self`, or a builder with room for `rows` rows and `previous`'s data.
    fn presized(self, _rows: usize, _previous: Option<&ArrayRef>) -> Self {
        self
    }
}

impl Presize for StringBuilder {
    fn presized(self, rows: usize, previous: Option<&ArrayRef>) -> Self {
        let Some(previous) = previous.and_then(|array| array.as_string_opt::<i32>()) else {
            return self;
        };
        let offsets = previous.value_offsets();
        let bytes = match (offsets.first(), offsets.last()) {
            (Some(first), Some(last)) => (last - first) as usize,
            _ => 0,
        };
        let wanted = bytes + bytes / 4;
        if wanted <= self.values_capacity() {
            return self;
        }
        StringBuilder::with_capacity(rows, wanted)
    }
}

impl<T: ArrowPrimitiveType> Presize for PrimitiveBuilder<T> {}
impl Presize for BooleanBuilder {}
impl<B: ArrayBuilder> Presize for ListBuilder<B> {}

/// `nullable` argument of a column that always has a value.
pub const REQUIRED: bool = false;
/// `nullable` argument of a column that may be null.
pub const NULLABLE: bool = true;

/// A string builder with room for `rows` short values.
pub fn text_builder(rows: usize) -> StringBuilder {
    StringBuilder::with_capacity(rows, rows * 16)
}

/// Builds a `list<struct{role: string, content: string}>` column.
pub type MessageListBuilder = ListBuilder<StructBuilder>;

fn message_fields() -> Fields {
    Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ])
}

/// The data type of a message list column.
pub fn messages_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(message_fields()),
        true,
    )))
}

/// The schema field of a message list column.
pub fn messages_field(name: &str) -> Field {
    Field::new(name, messages_type(), false)
}

pub fn message_list_builder(rows: usize) -> MessageListBuilder {
    ListBuilder::new(StructBuilder::from_fields(message_fields(), rows * 2))
}

/// Appends one row: a conversation of `(role, content)` messages.
pub fn push_message<R: AsRef<str>, C: AsRef<str>>(
    builder: &mut MessageListBuilder,
    messages: &[(R, C)],
) {
    let values = builder.values();
    for (role, content) in messages {
        super::steps::struct_field::<StringBuilder>(values, 0).append_value(role.as_ref());
        super::steps::struct_field::<StringBuilder>(values, 1).append_value(content.as_ref());
        values.append(true);
    }
    builder.append(true);
}
