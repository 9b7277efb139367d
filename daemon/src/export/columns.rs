//! Column shapes shared by several exports: chat messages (`list<struct{role, content}>`), the
//! shape TRL's conversational datasets and verl's `prompt` use; and [`export_columns!`], which
//! declares an export's columns in one list.

use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
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
