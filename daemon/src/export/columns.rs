//! Column shapes shared by several exports: chat messages (`list<struct{role, content}>`), the
//! shape TRL's conversational datasets and verl's `prompt` use.

use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
use arrow_schema::{DataType, Field, Fields};
use std::sync::Arc;

/// Builds a `list<struct{role: string, content: string}>` column.
pub type MessageListBuilder = ListBuilder<StructBuilder>;

fn message_fields() -> Fields {
    Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ])
}

/// The schema field of a message list column.
pub fn messages_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new_list_field(
            DataType::Struct(message_fields()),
            true,
        ))),
        false,
    )
}

pub fn message_list_builder(rows: usize) -> MessageListBuilder {
    ListBuilder::new(StructBuilder::from_fields(message_fields(), rows * 2))
}

/// Appends one row: a conversation of `(role, content)` messages.
pub fn push_message(builder: &mut MessageListBuilder, messages: &[(&str, &str)]) {
    let values = builder.values();
    for (role, content) in messages {
        super::steps::struct_field::<StringBuilder>(values, 0).append_value(role);
        super::steps::struct_field::<StringBuilder>(values, 1).append_value(content);
        values.append(true);
    }
    builder.append(true);
}
